"""A proxy node's upstream link without I/O: the commands it sends (a Clock and a list for
the wire), reference counts, no echo, failover without gap or duplicate."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from kraken.pubsub import wire
from kraken.pubsub.router import Router
from kraken.pubsub.subscriber import QueueSubscriber
from kraken.pubsub.testing import Conn, Tree
from kraken.pubsub.upstream import RecentRecords, UpstreamLink


def setup() -> tuple[Clock, Router, UpstreamLink, list[bytes]]:
    clock = Clock()
    clock.advance(1_700_000_000)
    router = Router(clock)
    link = UpstreamLink(router, clock, poll_interval=0.5)
    router.upstream = link
    sent: list[bytes] = []
    link.attach(sent.append, "up")
    return clock, router, link, sent


def client(router: Router) -> QueueSubscriber:
    c = QueueSubscriber(router.new_id(), "c", router.now(), 1000, 1 << 20)
    router.connect(c)
    return c


def records(conn: Conn) -> list[wire.Record]:
    replies = wire.ReplyParser().feed(conn.send(b"get messages\r\n"))
    assert len(replies) == 1
    return replies[0].records()


def test_subscriptions_are_reference_counted_and_merged_per_turn() -> None:
    clock, router, _link, sent = setup()
    assert sent == [b"set proxy 0 0 0\r\n\r\n"]  # nothing to poll for yet
    sent.clear()
    a, b = client(router), client(router)
    router.subscribe(a, [b"x", b"y"])
    router.subscribe(b, [b"y", b"z"])
    router.psubscribe(b, [b"p.*"])
    assert sent == []
    clock.advance(0)
    assert sent == [b"set subscribe 0 0 5\r\nx y z\r\nset psubscribe 0 0 3\r\np.*\r\n", b"get messages\r\n"]
    sent.clear()
    router.unsubscribe(a, [b"y"])  # b still holds y
    router.disconnect(b)
    clock.advance(0)
    assert sent == [b"set unsubscribe 0 0 3\r\ny z\r\nset punsubscribe 0 0 3\r\np.*\r\n"]


def test_publishes_are_forwarded_in_one_command_and_upstream_records_are_not() -> None:
    clock, router, link, sent = setup()
    a, b = client(router), client(router)
    router.subscribe(a, [b"t"])
    clock.advance(0)
    sent.clear()
    router.publish(b, [([b"t"], b"1"), ([b"t", b"u"], b"2")])
    clock.advance(0)
    assert sent == [b"set publish 0 0 34\r\nMESSAGE t 1\r\n1\r\nMESSAGE t u 1\r\n2\r\n\r\n"]
    sent.clear()
    link.receive(b"STORED\r\nSTORED\r\n")  # subscribe, publish
    link.receive(wire.value_reply(wire.record([b"t"], b"from upstream")))  # the poll
    assert a.drain(0) == b"MESSAGE t 1\r\n1\r\nMESSAGE t 1\r\n2\r\nMESSAGE t 13\r\nfrom upstream\r\n"
    clock.advance(0)
    # polls again at once, two deep while records flow, and forwards nothing
    assert sent == [b"get messages\r\nget messages\r\n"]


def test_an_empty_poll_waits_for_the_interval_and_a_refusal_is_counted() -> None:
    clock, router, link, sent = setup()
    router.subscribe(client(router), [b"t"])
    clock.advance(0)
    sent.clear()
    link.receive(b"STORED\r\nSERVER_ERROR the server is at its limit of 1 subscriptions\r\nEND\r\n")
    assert link.errors == 1 and link.covers([b"t"], 0, None, False) is False
    clock.advance(0.4)
    assert sent == []
    clock.advance(0.1)
    assert sent == [b"get messages\r\n"]


def test_while_detached_publishes_wait_bounded_and_attach_resubscribes() -> None:
    clock, router, link, sent = setup()
    link.max_pending_bytes = 40
    a, b = client(router), client(router)
    router.subscribe(a, [b"t"])
    clock.advance(0)
    link.receive(b"STORED\r\nSTORED\r\nEND\r\n")
    clock.advance(1)
    link.detach()
    for i in range(4):
        router.publish(b, [([b"t"], b"m%d" % i)])
    assert link.dropped == 2
    sent.clear()
    link.attach(sent.append, "other")
    out = b"".join(sent)
    # a replay from a little before the last contact, then what waited
    assert out.startswith(
        b"set proxy 0 0 0\r\n\r\nset retro_subscribe 0 0 20\r\n1699999998.000000\r\nt\r\nget messages\r\n"
    )
    assert b"MESSAGE t 2\r\nm2\r\nMESSAGE t 2\r\nm3\r\n" in out and b"m1" not in out


def test_failover_resumes_without_gap_or_duplicate() -> None:
    tree = Tree(levels=1)
    a = tree.add_proxy(0)
    b = tree.add_proxy(0)
    p = tree.add_proxy(a)
    tree.clock.advance(10)  # the root's replays reach back to its start
    sub, sub2 = tree.connect_to(p), tree.connect_to(p)
    sub.send(wire.set_command(b"subscribe", b"t"))
    sub2.send(wire.set_command(b"psubscribe", b"n.>"))
    publisher = tree.connect_to(0)
    publisher.send(wire.set_command(b"publish", wire.publish_body([([b"t"], b"m%d" % i) for i in range(5)])))
    assert [pl for _, pl in records(sub)] == [b"m%d" % i for i in range(5)]
    # m5..m9 reach proxy a, which dies before p polls them; p's own client publishes meanwhile
    publisher.protocol.dataReceived(
        wire.set_command(b"publish", wire.publish_body([([b"t"], b"m%d" % i) for i in range(5, 10)]))
    )
    publisher.protocol.dataReceived(wire.set_command(b"publish", wire.record([b"n.x"], b"news")))
    tree.links[a].exchange()
    tree.clock.advance(1)
    tree.fail_over(p, b)
    sub2.send(wire.set_command(b"publish", wire.record([b"t"], b"from p")))
    publisher.send(wire.set_command(b"publish", wire.record([b"t"], b"m10")))
    assert [pl for _, pl in records(sub)] == [b"m%d" % i for i in range(5, 10)] + [b"from p", b"m10"]
    assert records(sub2) == [([b"n.x"], b"news")]
    assert tree.link(p).resumed == 1 and tree.link(p).resume_gaps == 0
    # the root saw p's record once, through b
    assert [pl for _, pl in records(publisher)] == []
    watcher = tree.connect_to(0)
    watcher.send(wire.set_command(b"retro_subscribe", b"0\r\nt"))
    assert tree.routers[0].stats.published == 13


def test_a_register_from_before_a_failover_cannot_reach_the_new_upstream() -> None:
    tree = Tree(levels=1)
    a, b = tree.add_proxy(0), tree.add_proxy(0)
    p = tree.add_proxy(a)
    s = tree.connect_to(p)
    assert s.send(b"set register 0 0 0\r\n\r\n") == b"STORED\r\n"
    tree.fail_over(p, b)
    # "fresh" is held nowhere: its replay would need a position of the lost upstream
    assert s.send(wire.set_command(b"subscribe", b"fresh")) == b"NOT_FOUND\r\n"
    position = s.send(b"get position\r\n")
    assert position.startswith(b"VALUE position 0 ") and b"/" in position


@settings(max_examples=200, deadline=None)
@given(
    seen=st.lists(st.tuples(st.sampled_from([b"a", b"b"]), st.sampled_from([b"1", b"2"])), max_size=12),
    replayed=st.lists(st.tuples(st.sampled_from([b"a", b"b"]), st.sampled_from([b"1", b"2"])), max_size=12),
)
def test_recent_records_drop_each_seen_record_once(
    seen: list[tuple[bytes, bytes]], replayed: list[tuple[bytes, bytes]]
) -> None:
    recent = RecentRecords(60, 1 << 20)
    for topic, payload in seen:
        recent.add(0, [topic], payload)
    kept = [r for r in replayed if not recent.take([r[0]], r[1])]
    # what is delivered is the replay minus what was seen, counting repeats
    for record in set(replayed):
        expected = max(0, replayed.count(record) - seen.count(record))
        assert kept.count(record) == expected


def test_recent_records_forget_by_age_and_size() -> None:
    recent = RecentRecords(10, 200)
    recent.add(0, [b"a"], b"x")
    recent.add(11, [b"a"], b"y")
    assert not recent.take([b"a"], b"x") and recent.take([b"a"], b"y")
    recent.settled()
    for i in range(20):
        recent.add(12, [b"a"], b"%d" % i)
    assert recent.size <= 200 and not recent.take([b"a"], b"0") and recent.take([b"a"], b"19")


def test_only_a_pubsub_certificate_may_declare_a_link() -> None:
    tree = Tree(levels=1)
    plain = tree.connect()
    for key in (b"proxy", b"peer"):
        assert plain.send(wire.set_command(key, b"")) == (
            b"CLIENT_ERROR set %s needs a mutual-TLS connection with a pubsub certificate\r\n" % key
        )
    assert not plain.closed
    client = plain.protocol.session.client  # type: ignore[union-attr]
    assert not client.full_records and not client.peer


def test_silence_is_measured_only_while_a_question_is_out() -> None:
    clock, _router, link, sent = setup()
    link.receive(b"STORED\r\n")  # the hello
    clock.advance(5)
    assert link.silent_for() == 0.0
    link.keepalive()
    clock.advance(0)
    assert sent[-1] == b"get position\r\n"
    clock.advance(4)
    assert link.silent_for() == 4.0
    link.receive(b"VALUE position 0 1\r\n7\r\nEND\r\n")
    assert link.silent_for() == 0.0
