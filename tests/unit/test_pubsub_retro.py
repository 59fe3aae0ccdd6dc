"""Retroactive subscription: the spec's register/retro scenarios (section 8) and our fixes."""

from __future__ import annotations

from kraken.pubsub import wire
from kraken.pubsub.testing import Conn
from tests.unit import pubsub_topologies
from tests.unit.pubsub_topologies import MakeHarness

make = pubsub_topologies.make  # the fixture

START = 1_700_000_000.0


def publish(conn: Conn, *records: tuple[list[bytes], bytes]) -> None:
    assert conn.send(wire.set_command(b"publish", wire.publish_body(records))) == b"STORED\r\n"


def received(conn: Conn) -> list[tuple[list[bytes], bytes]]:
    replies = wire.ReplyParser().feed(conn.send(b"get messages\r\n"))
    assert len(replies) == 1
    return replies[0].records()


def pairs(records: list[tuple[list[bytes], bytes]]) -> set[tuple[bytes, bytes]]:
    return {(t, p) for topics, p in records for t in topics}


MSGS = (([b"t1", b"t2", b"other"], b"msg1"), ([b"t1", b"t2"], b"msg2"))


def test_retro_basic_gives_filtered_records_in_publish_order(make: MakeHarness) -> None:
    h = make()
    s, p = h.connect(), h.connect()
    assert s.send(b"set register 0 0 0\r\n\r\n") == b"STORED\r\n"
    h.clock.advance(1)
    publish(p, *MSGS)
    assert p.send(b"get messages\r\n") == b"END\r\n"
    assert s.send(wire.set_command(b"subscribe", b"t1 t2 null")) == b"STORED\r\n"
    block = (
        b"MESSAGE t1 4\r\nmsg1\r\nMESSAGE t2 4\r\nmsg1\r\nMESSAGE t1 4\r\nmsg2\r\nMESSAGE t2 4\r\nmsg2\r\n"
    )
    assert s.send(b"get messages\r\n") == wire.value_reply(block)


def test_register_has_no_same_second_gap(make: MakeHarness) -> None:
    h = make()
    s, p = h.connect(), h.connect()
    s.send(b"set register 0 0 0\r\n\r\n")
    publish(p, *MSGS)  # same clock second as the register
    s.send(wire.set_command(b"subscribe", b"t1 t2 null"))
    assert pairs(received(s)) == {(b"t1", b"msg1"), (b"t2", b"msg1"), (b"t1", b"msg2"), (b"t2", b"msg2")}


def test_register_cutoff_excludes_older_messages(make: MakeHarness) -> None:
    h = make()
    s, p = h.connect(), h.connect()
    publish(p, ([b"t1", b"t2"], b"old1"), ([b"t1"], b"old2"))
    s.send(b"set register 0 0 0\r\n\r\n")
    publish(p, *MSGS)
    s.send(wire.set_command(b"subscribe", b"t1 t2 null"))
    payloads = [pl for _, pl in received(s)]
    assert payloads == [b"msg1", b"msg1", b"msg2", b"msg2"]


def test_offline_retro_basic_and_cutoff_with_fractional_horizon(make: MakeHarness) -> None:
    h = make()
    s, p = h.connect(), h.connect()
    publish(p, ([b"t1", b"t2"], b"old1"))
    h.clock.advance(0.25)
    horizon = h.clock.seconds()
    h.clock.advance(0.25)
    publish(p, *MSGS)
    data = b"%.3f\r\nt1 t2 null " % horizon
    assert s.send(wire.set_command(b"retro_subscribe", data)) == b"STORED\r\n"
    assert pairs(received(s)) == {(b"t1", b"msg1"), (b"t2", b"msg1"), (b"t1", b"msg2"), (b"t2", b"msg2")}


def test_horizon_before_start_is_not_found_but_subscription_stands(make: MakeHarness) -> None:
    h = make()
    s, p = h.connect(), h.connect()
    assert s.send(wire.set_command(b"retro_subscribe", b"0\r\nt1")) == b"NOT_FOUND\r\n"
    publish(p, ([b"t1"], b"live"))
    assert received(s) == [([b"t1"], b"live")]


def test_future_horizon_and_empty_topics_are_stored(make: MakeHarness) -> None:
    h = make()
    s, p = h.connect(), h.connect()
    publish(p, ([b"t1"], b"x"))
    assert s.send(wire.set_command(b"retro_subscribe", b"%d\r\nt1" % (START + 100))) == b"STORED\r\n"
    assert s.send(wire.set_command(b"retro_subscribe", b"0\r\n")) == b"STORED\r\n"
    assert s.send(b"get messages\r\n") == b"END\r\n"


def test_eviction_makes_only_the_affected_shard_not_found(make: MakeHarness) -> None:
    h = make(retained=2)
    s, p = h.connect(), h.connect()
    s.send(b"set register 0 0 0\r\n\r\n")
    for i in range(3):
        publish(p, ([b"t1"], b"m%d" % i))  # shard 0 evicts m0
    publish(p, ([b"beta"], b"b"))  # shard 1 keeps everything
    assert s.send(wire.set_command(b"subscribe", b"beta t1")) == b"NOT_FOUND\r\n"
    assert s.send(b"get messages\r\n") == b"END\r\n"  # all or nothing
    s2 = h.connect()
    s2.send(b"set register 0 0 0\r\n\r\n")
    s.send(b"set register 0 0 0\r\n\r\n")
    publish(p, ([b"beta"], b"b2"))
    assert s2.send(wire.set_command(b"subscribe", b"beta")) == b"STORED\r\n"
    assert received(s2) == [([b"beta"], b"b2")]
    # the horizon is single-use: a second subscribe is a plain one
    assert s2.send(wire.set_command(b"subscribe", b"t1")) == b"STORED\r\n"
    assert s2.send(b"get messages\r\n") == b"END\r\n"


def test_own_messages_are_not_replayed(make: MakeHarness) -> None:
    h = make()
    s = h.connect()
    s.send(b"set register 0 0 0\r\n\r\n")
    publish(s, ([b"t9"], b"mine"))
    assert s.send(wire.set_command(b"subscribe", b"t9")) == b"STORED\r\n"
    assert s.send(b"get messages\r\n") == b"END\r\n"


def test_what_arrived_live_is_not_replayed(make: MakeHarness) -> None:
    h = make()
    s, p = h.connect(), h.connect()
    s.send(wire.set_command(b"subscribe", b"other"))  # t2 and other share shard 2
    s.send(b"set register 0 0 0\r\n\r\n")
    publish(p, ([b"t2", b"other"], b"both"), ([b"t2"], b"only-t2"))
    assert received(s) == [([b"other"], b"both")]
    s.send(wire.set_command(b"subscribe", b"t2 other"))
    assert received(s) == [([b"t2"], b"only-t2")]


def test_a_gap_in_a_subscription_is_filled(make: MakeHarness) -> None:
    h = make()
    s, p = h.connect(), h.connect()
    s.send(wire.set_command(b"subscribe", b"other"))
    s.send(b"set register 0 0 0\r\n\r\n")
    publish(p, ([b"other"], b"live"))
    s.send(wire.set_command(b"unsubscribe", b"other"))
    publish(p, ([b"other"], b"missed"))
    s.send(wire.set_command(b"subscribe", b"other"))
    assert received(s) == [([b"other"], b"live"), ([b"other"], b"missed")]


def test_retro_subscribe_keeps_a_pending_register(make: MakeHarness) -> None:
    h = make()
    s, p = h.connect(), h.connect()
    s.send(b"set register 0 0 0\r\n\r\n")
    h.clock.advance(0.5)
    publish(p, ([b"a"], b"x"), ([b"beta"], b"y"))
    assert s.send(wire.set_command(b"retro_subscribe", b"%d\r\na" % START)) == b"STORED\r\n"
    assert received(s) == [([b"a"], b"x")]
    s.send(wire.set_command(b"subscribe", b"beta"))
    assert received(s) == [([b"beta"], b"y")]


def test_second_register_overwrites_the_first(make: MakeHarness) -> None:
    h = make()
    s, p = h.connect(), h.connect()
    s.send(b"set register 0 0 0\r\n\r\n")
    publish(p, ([b"a"], b"before"))
    s.send(b"get register\r\n")
    publish(p, ([b"a"], b"after"))
    s.send(wire.set_command(b"subscribe", b"a"))
    assert received(s) == [([b"a"], b"after")]


def test_no_retention_means_not_found_once_anything_was_published(make: MakeHarness) -> None:
    h = make(retained=0)
    s, p = h.connect(), h.connect()
    s.send(b"set register 0 0 0\r\n\r\n")
    assert s.send(wire.set_command(b"subscribe", b"beta")) == b"STORED\r\n"  # nothing was lost
    s.send(b"set register 0 0 0\r\n\r\n")
    publish(p, ([b"t1"], b"gone"))
    assert s.send(wire.set_command(b"subscribe", b"t1 beta")) == b"NOT_FOUND\r\n"
    publish(p, ([b"t1"], b"live"))
    assert received(s) == [([b"t1"], b"live")]
