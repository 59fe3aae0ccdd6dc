"""Pattern subscriptions: the matcher, the trie index against it, the wire commands, replay
and limits."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kraken.pubsub import wire
from kraken.pubsub.patterns import BadPattern, PatternIndex, compile_pattern, matches, parse_patterns
from kraken.pubsub.testing import Conn, Harness
from tests.unit import pubsub_topologies
from tests.unit.pubsub_topologies import MakeHarness

make = pubsub_topologies.make  # the fixture


def pub(conn: Conn, *records: tuple[list[bytes], bytes]) -> None:
    assert conn.send(wire.set_command(b"publish", wire.publish_body(records))) == b"STORED\r\n"


def got(conn: Conn) -> list[tuple[list[bytes], bytes]]:
    replies = wire.ReplyParser().feed(conn.send(b"get messages\r\n"))
    assert len(replies) == 1
    return replies[0].records()


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        (b"a.*.c", b"a.b.c", True),
        (b"a.*.c", b"a..c", True),
        (b"a.*.c", b"a.b.d", False),
        (b"a.*.c", b"a.b.c.d", False),
        (b"a.*.c", b"a.c", False),
        (b"a.>", b"a.b", True),
        (b"a.>", b"a.b.c", True),
        (b"a.>", b"a", False),
        (b">", b"anything.at.all", True),
        (b">", b"", True),
        (b"*", b"a", True),
        (b"*", b"a.b", False),
        (b"a*", b"ab", False),
        (b"a*", b"a*", True),
        (b"a.b", b"a.b", True),
        (b"*.>", b"x", False),
        (b"*.>", b"x.y", True),
    ],
)
def test_matches(pattern: bytes, topic: bytes, expected: bool) -> None:
    assert matches(compile_pattern(pattern), topic) is expected
    index: PatternIndex[str] = PatternIndex()
    index.add(pattern, "s")
    assert index.match(topic) == (("s",) if expected else ())


@pytest.mark.parametrize("pattern", [b"", b"a..b", b".a", b"a.", b"a.>.b", b">.a"])
def test_bad_patterns_are_refused(pattern: bytes) -> None:
    with pytest.raises(BadPattern):
        compile_pattern(pattern)


def test_parse_patterns_skips_empty_pieces() -> None:
    assert parse_patterns(b"a.*  b.> ") == [b"a.*", b"b.>"]


TOKENS = st.sampled_from([b"a", b"b", b"c", b"", b"*", b">", b"ab"])


@settings(max_examples=300, deadline=None)
@given(
    patterns=st.lists(st.lists(st.sampled_from([b"a", b"b", b"*", b">"]), min_size=1, max_size=4),
                      max_size=8),
    topics=st.lists(st.lists(TOKENS, min_size=1, max_size=5), min_size=1, max_size=8),
    removed=st.lists(st.integers(0, 7), max_size=4),
)
def test_index_agrees_with_the_reference_matcher(
    patterns: list[list[bytes]], topics: list[list[bytes]], removed: list[int]
) -> None:
    held: dict[tuple[bytes, int], None] = {}
    index: PatternIndex[int] = PatternIndex()
    for holder, tokens in enumerate(patterns):
        pattern = b".".join(tokens)
        try:
            compile_pattern(pattern)
        except BadPattern:
            continue
        index.add(pattern, holder)
        held[(pattern, holder)] = None
    for holder in removed:
        for pattern, h in list(held):
            if h == holder:
                index.discard(pattern, h)
                del held[(pattern, h)]
    for tokens in topics:
        topic = b".".join(tokens)
        expected = {h for p, h in held if matches(compile_pattern(p), topic)}
        found = index.match(topic)
        assert set(found) == expected and len(found) == len(expected)
    for pattern, holder in list(held):
        index.discard(pattern, holder)
    assert index.root.empty() and len(index) == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=80),
    key=st.sampled_from([b"psubscribe", b"punsubscribe", b"retro_psubscribe"]),
)
def test_pattern_commands_never_crash(data: bytes, key: bytes) -> None:
    h = Harness()
    conn = h.connect()
    reply = conn.send(wire.set_command(key, data))
    assert reply in (b"STORED\r\n", b"NOT_FOUND\r\n") or reply.startswith(
        (b"CLIENT_ERROR ", b"SERVER_ERROR ")
    )
    assert reply.endswith(b"\r\n") and reply.count(b"\r\n") == 1
    if not conn.closed:
        assert conn.send(b"get messages\r\n") == b"END\r\n"


def test_psubscribe_transcript(make: MakeHarness) -> None:
    h = make()
    sub, p = h.connect(), h.connect()
    assert sub.send(b"set psubscribe 0 0 12\r\nnews.*.sport\r\n") == b"STORED\r\n"
    assert sub.send(b"set psubscribe 0 0 5\r\nlog.>\r\n") == b"STORED\r\n"
    body = b"MESSAGE news.uk.sport 2\r\ngo\r\nMESSAGE news.uk.weather 4\r\nrain\r\nMESSAGE log.a.b 1\r\nx\r\n"
    assert p.send(b"set publish 0 0 %d\r\n%s\r\n" % (len(body), body)) == b"STORED\r\n"
    assert sub.send(b"get messages\r\n") == (
        b"VALUE messages 0 49\r\nMESSAGE news.uk.sport 2\r\ngo\r\nMESSAGE log.a.b 1\r\nx\r\nEND\r\n"
    )
    assert sub.send(b"set punsubscribe 0 0 5\r\nlog.>\r\n") == b"STORED\r\n"
    pub(p, ([b"log.a"], b"gone"), ([b"news.fr.sport"], b"allez"))
    assert got(sub) == [([b"news.fr.sport"], b"allez")]


def test_a_record_matched_by_name_and_pattern_arrives_once_naming_each_topic(make: MakeHarness) -> None:
    h = make(shards=1)
    sub, p = h.connect(), h.connect()
    sub.send(wire.set_command(b"subscribe", b"a.b"))
    sub.send(wire.set_command(b"psubscribe", b"a.* a.>"))
    pub(p, ([b"a.b", b"a.c", b"z"], b"m"))
    pub(p, ([b"a.b"], b"n"))
    assert got(sub) == [([b"a.b", b"a.c"], b"m"), ([b"a.b"], b"n")]
    assert h.router.pattern_subscriptions == 2


def test_publisher_never_gets_its_own_message_through_a_pattern(make: MakeHarness) -> None:
    h = make()
    a, b = h.connect(), h.connect()
    for c in (a, b):
        c.send(wire.set_command(b"psubscribe", b"t.*"))
    pub(a, ([b"t.1"], b"hi"))
    assert got(a) == []
    assert got(b) == [([b"t.1"], b"hi")]


def test_register_then_psubscribe_replays_matching_records_once(make: MakeHarness) -> None:
    h = make()
    s, p = h.connect(), h.connect()
    pub(p, ([b"t.old"], b"old"))
    assert s.send(b"set register 0 0 0\r\n\r\n") == b"STORED\r\n"
    pub(p, ([b"t.a", b"u.a"], b"m1"), ([b"u.b"], b"m2"), ([b"t.b"], b"m3"))
    s.send(wire.set_command(b"subscribe", b"t.b"))  # consumes the register: replays m3
    assert got(s) == [([b"t.b"], b"m3")]
    s.send(b"set register 0 0 0\r\n\r\n")
    pub(p, ([b"t.c"], b"m4"), ([b"t.b"], b"m5"))
    assert s.send(wire.set_command(b"psubscribe", b"t.*")) == b"STORED\r\n"
    # m5 came live through the subscription to t.b, so only m4 is replayed
    assert got(s) == [([b"t.b"], b"m5"), ([b"t.c"], b"m4")]


def test_retro_psubscribe_replays_by_time_and_not_found_before_start(make: MakeHarness) -> None:
    h = make()
    s, p = h.connect(), h.connect()
    pub(p, ([b"x.1"], b"before"))
    h.clock.advance(0.5)
    horizon = h.clock.seconds()
    h.clock.advance(0.5)
    pub(p, ([b"x.2", b"y"], b"after"), ([b"y"], b"other"))
    data = b"%.3f\r\nx.>" % horizon
    assert s.send(wire.set_command(b"retro_psubscribe", data)) == b"STORED\r\n"
    assert got(s) == [([b"x.2"], b"after")]
    t = h.connect()
    assert t.send(wire.set_command(b"retro_psubscribe", b"0\r\nx.>")) == b"NOT_FOUND\r\n"
    pub(p, ([b"x.3"], b"live"))
    assert got(t) == [([b"x.3"], b"live")]


def test_pattern_replay_skips_what_a_former_pattern_delivered_live(make: MakeHarness) -> None:
    h = make()
    s, p = h.connect(), h.connect()
    start = h.clock.seconds()
    s.send(wire.set_command(b"psubscribe", b"k.*"))
    h.clock.advance(1)
    pub(p, ([b"k.1"], b"live"))
    s.send(wire.set_command(b"punsubscribe", b"k.*"))
    pub(p, ([b"k.2"], b"missed"))
    assert got(s) == [([b"k.1"], b"live")]
    assert s.send(wire.set_command(b"retro_psubscribe", b"%.3f\r\nk.>" % start)) == b"STORED\r\n"
    assert got(s) == [([b"k.2"], b"missed")]


def test_bad_pattern_gets_an_error_and_the_connection_stays() -> None:
    h = Harness()
    s = h.connect()
    assert s.send(wire.set_command(b"psubscribe", b"ok.* a.>.b")) == (
        b"CLIENT_ERROR bad pattern: pattern b'a.>.b': '>' must be the last token\r\n"
    )
    assert not s.closed
    assert h.router.pattern_subscriptions == 0  # all or nothing: ok.* was not subscribed either
    assert s.send(wire.set_command(b"psubscribe", b"")) == (
        b"CLIENT_ERROR bad pattern: psubscribe names no pattern\r\n"
    )
    assert s.send(wire.set_command(b"retro_psubscribe", b"soon\r\na.*")) == (
        b"CLIENT_ERROR bad retro_psubscribe data\r\n"
    )
    assert s.closed


def test_pattern_limits() -> None:
    h = Harness()
    h.router.limits = type(h.router.limits)(patterns_per_connection=2, patterns=3, pattern_bytes=8)
    a, b = h.connect(), h.connect()
    assert a.send(wire.set_command(b"psubscribe", b"p.1 p.2")) == b"STORED\r\n"
    assert a.send(wire.set_command(b"psubscribe", b"p.2 p.3")) == (
        b"SERVER_ERROR psubscribe would give this connection 3 patterns, over the limit of 2\r\n"
    )
    assert a.send(wire.set_command(b"psubscribe", b"p.1")) == b"STORED\r\n"  # held already
    assert b.send(wire.set_command(b"psubscribe", b"q.1 q.2")) == (
        b"SERVER_ERROR the server is at its limit of 3 patterns\r\n"
    )
    assert b.send(wire.set_command(b"psubscribe", b"toolong.*")) == (
        b"CLIENT_ERROR bad pattern: pattern of 9 bytes is over the limit of 8\r\n"
    )
    assert h.router.stats.refused_subscribes == {"patterns_per_connection": 1, "patterns_server": 1}
    a.close()
    assert h.router.pattern_subscriptions == 0 and len(h.router.patterns) == 0
    assert b.send(wire.set_command(b"psubscribe", b"q.1 q.2")) == b"STORED\r\n"


def test_pattern_churn_keeps_bounded_history() -> None:
    h = Harness()
    h.router.limits = type(h.router.limits)(patterns_per_connection=10)
    s = h.connect()
    for i in range(3000):
        s.send(wire.set_command(b"psubscribe", b"c.%d" % i))
        s.send(wire.set_command(b"punsubscribe", b"c.%d" % i))
    assert len(s.protocol.session.client.ended_patterns) <= 1025
