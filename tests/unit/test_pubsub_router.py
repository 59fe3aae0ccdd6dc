"""The original's router and client tests (spec section 8), in memory with a Clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from kraken.pubsub import wire
from kraken.pubsub.router import Router
from kraken.pubsub.subscriber import QueueSubscriber
from kraken.pubsub.testing import Harness
from kraken.pubsub.timewords import time_delta_in_words


def client(router: Router) -> QueueSubscriber:
    c = QueueSubscriber(router.new_id(), "test", router.now(), 1000, 1 << 20)
    router.connect(c)
    return c


def drained(router: Router, c: QueueSubscriber) -> list[tuple[list[bytes], bytes]]:
    router.flush()
    block = c.drain(router.now())
    return wire.parse_publish(block) if block else []


def test_subscribe_unsubscribe_topics() -> None:
    r = Router(Clock())
    c = client(r)
    r.subscribe(c, [b"topic1", b"topic2"])
    r.subscribe(c, [b"topic3"])
    r.subscribe(c, [b"topic3"])
    assert set(c.topics) == {b"topic1", b"topic2", b"topic3"}
    r.unsubscribe(c, [b"topic1", b"topic3"])
    assert set(c.topics) == {b"topic2"}


def test_publish_publish_and_self_exclusion() -> None:
    r = Router(Clock())
    c, other = client(r), client(r)
    r.subscribe(c, [b"topic1", b"topic2", b"topic3"])
    r.publish(other, [([b"topic1", b"topic3"], b"m1"), ([b"topic3"], b"m2")])
    # topic1 is in shard 2, topic3 in shard 0: ascending shard order
    assert drained(r, c) == [([b"topic3"], b"m1"), ([b"topic1"], b"m1"), ([b"topic3"], b"m2")]
    r.publish(c, [([b"topic2"], b"own")])
    assert drained(r, c) == []
    r.publish(other, [([b"topic2"], b"theirs")])
    assert drained(r, c) == [([b"topic2"], b"theirs")]


def test_topic_status() -> None:
    r = Router(Clock())
    a, b = client(r), client(r)
    r.subscribe(a, [b"alpha", b"beta"])
    r.subscribe(b, [b"alpha"])
    assert r.topic_counts() == [(b"alpha", 2), (b"beta", 1)]
    r.disconnect(a)
    assert r.topic_counts() == [(b"alpha", 1)]
    assert r.clients == {b.id: b}


def test_disconnect_and_quit_leave_no_state() -> None:
    h = Harness()
    a, b = h.connect(), h.connect()
    a.send(wire.set_command(b"subscribe", b"topic1 topic2"))
    assert a.send(wire.set_command(b"unsubscribe", b"topic1")) == b"STORED\r\n"
    a.close()
    b.send(b"quit\r\n")
    assert h.router.clients == {} and h.router.subscribers == {} and len(h.factory.admission) == 0


def test_publish_receive_commands() -> None:
    h = Harness()
    a, b = h.connect(), h.connect()
    assert b.send(b"get messages\r\n") == b"END\r\n"
    b.send(wire.set_command(b"subscribe", b"topic1 topic2"))
    body = wire.publish_body([([b"topic1", b"topic2"], b"m1"), ([b"topic3"], b"m2")])
    a.send(wire.set_command(b"publish", body))
    records = wire.ReplyParser().feed(b.send(b"get messages\r\n"))[0].records()
    assert records == [([b"topic2"], b"m1"), ([b"topic1"], b"m1")]


def test_many_topics_and_fanout_warnings_do_not_change_delivery() -> None:
    from twisted.logger import formatEvent

    from kraken.pubsub import router as router_module

    events: list[dict] = []
    r = Router(Clock(), fanout_to_warn=2, topics_to_warn=2)
    subs = [client(r) for _ in range(3)]
    for s in subs:
        r.subscribe(s, [b"a", b"b"])
    saved = router_module.log.observer
    router_module.log.observer = events.append
    try:
        r.publish(None, [([b"a", b"b"], b"x")])
        r.publish(None, [([b"a"], b"y")])
        r.flush()
    finally:
        router_module.log.observer = saved
    lines = [formatEvent(e) for e in events]
    assert lines[0].startswith("Publish topic fanout of 2, publisher None")
    # one warning per shard (b: shard 2, a: shard 3), then one for the single-topic run
    assert [line.split(",")[0] for line in lines[1:]] == ["Publish subscriber fanout of 3"] * 3
    # b is in shard 2, a in shard 3
    assert all(drained(r, s) == [([b"b"], b"x"), ([b"a"], b"x"), ([b"a"], b"y")] for s in subs)
    assert r.stats.delivered == 9


def test_time_delta_in_words() -> None:
    cases = {
        1: "1 second", 5: "5 seconds", 60: "1 minute", 62: "1 minute 2 seconds",
        3310: "55 minutes 10 seconds", 3600: "1 hour", 10800: "3 hours",
        11445: "3 hours 10 minutes 45 seconds", 432010: "5 days 10 seconds",
    }
    for seconds, words in cases.items():
        assert time_delta_in_words(seconds) == words
    assert time_delta_in_words(0) == "0 seconds"
