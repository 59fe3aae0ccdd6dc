"""Byte-level transcripts of the spec's worked sessions (2.7) against the real protocol objects:
one node, a proxy node in front of it, and a chain of three (clients spread over the nodes)."""

from __future__ import annotations

import pytest

from kraken.pubsub.testing import Harness, Tree
from tests.unit import pubsub_topologies
from tests.unit.pubsub_topologies import MakeHarness

make = pubsub_topologies.make  # the fixture

BODY = b"MESSAGE topicA 9\r\nhi there!\r\nMESSAGE topicA topicB topicC 3\r\nabc\r\n"


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_worked_session(chunk: int | None, make: MakeHarness) -> None:
    h = make()
    a, b = h.connect(), h.connect()
    assert a.send(b"get messages\r\n", chunk) == b"END\r\n"
    assert a.send(b"set subscribe 0 0 13\r\ntopicA topicB\r\n", chunk) == b"STORED\r\n"
    assert len(BODY) == 66
    assert b.send(b"set publish 0 0 66\r\n" + BODY + b"\r\n", chunk) == b"STORED\r\n"
    assert b.send(b"get messages\r\n", chunk) == b"END\r\n"
    assert a.send(b"get messages\r\n", chunk) == (
        b"VALUE messages 0 73\r\nMESSAGE topicA 9\r\nhi there!\r\nMESSAGE topicA 3\r\nabc\r\n"
        b"MESSAGE topicB 3\r\nabc\r\nEND\r\n"
    )
    assert a.send(b"get messages\r\n", chunk) == b"END\r\n"
    assert a.send(b"set unsubscribe 0 0 6\r\ntopicA\r\n", chunk) == b"STORED\r\n"
    assert b.send(b"set publish 0 0 66\r\n" + BODY + b"\r\n", chunk) == b"STORED\r\n"
    assert a.send(b"get messages\r\n", chunk) == b"VALUE messages 0 21\r\nMESSAGE topicB 3\r\nabc\r\nEND\r\n"
    assert a.send(b"quit\r\n", chunk) == b""
    assert a.closed
    assert not b.closed


def test_node_client_flow_with_split_segments(make: MakeHarness) -> None:
    h = make()
    c1, c2 = h.connect(), h.connect()
    assert c1.send(b"get messages\r\n") == b"END\r\n"
    assert c1.send(b"set register 0 0 0\r\n") == b""
    assert c1.send(b"\r\n") == b"STORED\r\n"
    assert c1.send(b"set subscribe 0 0 13\r\n") == b""
    assert c1.send(b"topicA topicB\r\n") == b"STORED\r\n"
    body = b"MESSAGE topicA 9\r\nhi there!\r\nMESSAGE topicA topicB x 5\r\nmulti\r\n"
    assert len(body) == 63
    assert c2.send(b"set publish 0 0 63") == b""
    assert c2.send(b"\r\n") == b""
    assert c2.send(body) == b""
    assert c2.send(b"\r\n") == b"STORED\r\n"
    assert c1.send(b"get messages") == b""
    assert c1.send(b"\r\n") == (
        b"VALUE messages 0 77\r\nMESSAGE topicA 9\r\nhi there!\r\nMESSAGE topicA 5\r\nmulti\r\n"
        b"MESSAGE topicB 5\r\nmulti\r\nEND\r\n"
    )


def test_pipelined_commands_in_one_segment(make: MakeHarness) -> None:
    h = make()
    a = h.connect()
    data = b"set subscribe 0 0 1\r\na\r\nset subscribe 0 0 1\r\nb\r\nget messages\r\n"
    assert a.send(data) == b"STORED\r\nSTORED\r\nEND\r\n"


def test_same_shard_topics_merge_into_one_record_and_repeats_are_kept(make: MakeHarness) -> None:
    h = make()
    sub, pub = h.connect(), h.connect()
    sub.send(b"set subscribe 0 0 8\r\nt2 other\r\n")
    body = b"MESSAGE t1 t2 other 6\r\npayload\r\n"
    body = b"MESSAGE t1 t2 other 7\r\npayload\r\nMESSAGE a a 3\r\nxyz\r\n"
    pub.send(b"set publish 0 0 %d\r\n%s\r\n" % (len(body), body))
    sub.send(b"set subscribe 0 0 1\r\na\r\n")
    pub.send(b"set publish 0 0 %d\r\n%s\r\n" % (len(body), body))
    got = sub.send(b"get messages\r\n")
    block = b"MESSAGE t2 other 7\r\npayload\r\nMESSAGE t2 other 7\r\npayload\r\nMESSAGE a a 3\r\nxyz\r\n"
    assert got == b"VALUE messages 0 %d\r\n%sEND\r\n" % (len(block) - 2, block)


def test_one_shard_lists_every_matched_topic_in_one_record(make: MakeHarness) -> None:
    h = make(shards=1)
    sub, pub = h.connect(), h.connect()
    sub.send(b"set subscribe 0 0 13\r\nt1 t2 other x\r\n")
    body = b"MESSAGE t1 t2 other 2\r\nm1\r\n"
    pub.send(b"set publish 0 0 %d\r\n%s\r\n" % (len(body), body))
    assert sub.send(b"get messages\r\n") == b"VALUE messages 0 25\r\nMESSAGE t1 t2 other 2\r\nm1\r\nEND\r\n"


def test_publisher_subscribed_to_its_own_topic_gets_nothing(make: MakeHarness) -> None:
    h = make()
    a, b = h.connect(), h.connect()
    for c in (a, b):
        assert c.send(b"set subscribe 0 0 3\r\nfoo\r\n") == b"STORED\r\n"
    assert a.send(b"set publish 0 0 19\r\nMESSAGE foo 2\r\nhi\r\n\r\n") == b"STORED\r\n"
    assert a.send(b"get messages\r\n") == b"END\r\n"
    assert b.send(b"get messages\r\n") == b"VALUE messages 0 17\r\nMESSAGE foo 2\r\nhi\r\nEND\r\n"


def test_binary_payload_and_empty_topic(make: MakeHarness) -> None:
    h = make()
    sub, pub = h.connect(), h.connect()
    # "a  b" subscribes a, the empty topic and b; empty data subscribes the empty topic.
    assert sub.send(b"set subscribe 0 0 4\r\na  b\r\n") == b"STORED\r\n"
    payload = b"\r\n\x00\xff\n\r"
    body = b"MESSAGE  %d\r\n%s\r\n" % (len(payload), payload)
    assert pub.send(b"set publish 0 0 %d\r\n%s\r\n" % (len(body), body)) == b"STORED\r\n"
    assert sub.send(b"get messages\r\n") == b"VALUE messages 0 %d\r\n%sEND\r\n" % (len(body) - 2, body)


def test_zero_topic_record_and_empty_publish_are_stored(make: MakeHarness) -> None:
    h = make()
    pub = h.connect()
    assert pub.send(b"set publish 0 0 15\r\nMESSAGE 2\r\nhi\r\n\r\n") == b"STORED\r\n"
    assert pub.send(b"set publish 0 0 0\r\n\r\n") == b"STORED\r\n"


def test_flags_and_exptime_are_ignored_and_get_register_registers() -> None:
    h = Harness()
    a = h.connect()
    assert a.send(b"set subscribe x y 1\r\na\r\n") == b"STORED\r\n"
    assert a.send(b"set register 0 0 3\r\nxyz\r\n") == b"STORED\r\n"
    assert a.send(b"get register\r\n") == b"STORED\r\n"
    assert a.send(b"get messages   \r\n") == b"END\r\n"
    assert a.send(b"set subscribe 0 0 +1\r\nb\r\n") == b"STORED\r\n"
    assert set(h.router.clients[a.protocol.session.client.id].topics) == {b"a", b"b"}


def test_messages_queued_before_unsubscribe_stay_and_double_subscribe_is_one(make: MakeHarness) -> None:
    h = make()
    sub, pub = h.connect(), h.connect()
    sub.send(b"set subscribe 0 0 7\r\nfoo foo\r\n")
    pub.send(b"set publish 0 0 19\r\nMESSAGE foo 2\r\nhi\r\n\r\n")
    sub.send(b"set unsubscribe 0 0 3\r\nfoo\r\n")
    pub.send(b"set publish 0 0 19\r\nMESSAGE foo 2\r\nho\r\n\r\n")
    assert sub.send(b"get messages\r\n") == b"VALUE messages 0 17\r\nMESSAGE foo 2\r\nhi\r\nEND\r\n"


def test_disconnect_drops_queue_and_subscriptions() -> None:
    h = Harness()
    sub, pub = h.connect(), h.connect()
    sub.send(b"set subscribe 0 0 3\r\nfoo\r\n")
    pub.send(b"set publish 0 0 19\r\nMESSAGE foo 2\r\nhi\r\n\r\n")
    sub.close()
    assert h.router.subscribers == {}
    assert list(h.router.clients) == [pub.protocol.session.client.id]
    assert len(h.factory.admission) == 1


def test_pipelined_publishes_keep_order_across_runs(make: MakeHarness) -> None:
    from kraken.pubsub import wire

    h = make()
    sub, pub, other = h.connect(), h.connect(), h.connect()
    sub.send(b"set subscribe 0 0 3\r\nt u\r\n")
    pub.send(b"set subscribe 0 0 1\r\nt\r\n")
    other.send(b"set subscribe 0 0 1\r\nt\r\n")
    names = [b"t", b"t", b"u", b"t", b"t", b"t"] + [b"t"] * 150
    data = b"".join(wire.set_command(b"publish", wire.record([n], b"%d" % i)) for i, n in enumerate(names))
    assert pub.send(data) == b"STORED\r\n" * len(names)
    got = wire.ReplyParser().feed(sub.send(b"get messages\r\n"))[0].records()
    assert got == [([n], b"%d" % i) for i, n in enumerate(names)]
    assert pub.send(b"get messages\r\n") == b"END\r\n"
    t_only = wire.ReplyParser().feed(other.send(b"get messages\r\n"))[0].records()
    assert [p for _, p in t_only] == [b"%d" % i for i, n in enumerate(names) if n == b"t"]
    if not isinstance(h, Tree):  # a tree's routers also count deliveries to the links
        assert h.router.stats.delivered == len(names) + len(t_only)
