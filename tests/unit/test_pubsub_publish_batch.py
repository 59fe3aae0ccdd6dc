"""The batched publish path (``CommandParser(batch_publishes=True)`` and
``Router.publish_encoded_many``) against the plain one: same events, same replies, same
deliveries, same retained stream, whatever the bytes and their segmentation."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kraken.pubsub import wire
from kraken.pubsub.retro import Entry, RetainedShard
from kraken.pubsub.testing import Conn, Harness


def parse(data: bytes, cut: int, batch: bool) -> tuple[list[wire.Event], tuple[bytes, str] | None]:
    """Every event of *data* fed in *cut*-byte pieces (batches expanded), and the refusal."""
    parser = wire.CommandParser(max_line=100, max_value=300, batch_publishes=batch)
    events: list[wire.Event] = []
    try:
        for i in range(0, len(data), cut):
            for event in parser.feed(data[i : i + cut]):
                events.extend(event.as_sets() if isinstance(event, wire.Publishes) else [event])
    except wire.MalformedCommand as e:
        return events, (e.reply, e.reason)
    return events, None


_topics = st.sampled_from([b"t", b"u", b"a.b", b"", b"x" * 70, b"t\r", b"t\n", b"t u"])
_payloads = st.one_of(
    st.sampled_from([b"", b"hi", b"a\r\nb", b"\r\n", b"p" * 100, b"q" * 290, b"r" * 280, b"MESSAGE t 1\r\n"]),
    st.binary(max_size=20),
)


_DEFECTS = [
    None, None, None, None, None, None, "zero-padded length", "signed length", "length space",
    "two records", "short body", "long body", "count+1", "count-1", "long set line", "long token",
    "one token", "LF CR end", "no end",
]


@st.composite
def _publish(draw: st.DrawFn) -> bytes:
    """A publish command, canonical or with one defect the batched path must leave alone."""
    topic, payload, defect = draw(_topics), draw(_payloads), draw(st.sampled_from(_DEFECTS))
    length = {"zero-padded length": b"0%d", "signed length": b"+%d", "length space": b"%d "}.get(
        defect or "", b"%d"
    ) % len(payload)
    body = b"MESSAGE " + topic + b" " + length + b"\r\n" + payload + b"\r\n"
    bodies = {"two records": body + body, "short body": body[:-2], "long body": body + b"x"}
    body = bodies.get(defect or "", body)
    count = len(body) + {"count+1": 1, "count-1": -1}.get(defect or "", 0)
    # the set line: over max_line (100) with tokens of at most 64 bytes; a token over 64; too few
    flags = {
        "long set line": b"x" * 64 + b" " + b"y" * 30, "long token": b"x" * 65 + b" 0", "one token": b"0"
    }
    end = {"LF CR end": b"\n\r", "no end": b"xx"}.get(defect or "", b"\r\n")
    return b"set publish %s %d\r\n%s%s" % (flags.get(defect or "", b"0 0"), count, body, end)


_commands = st.one_of(
    _publish(),
    _publish(),
    st.sampled_from([
        b"get messages\r\n", b"set subscribe 0 0 1\r\nt\r\n", b"get register\r\n", b"quit\r\n",
        b"set publish 0 0 5\r\n", b"set publish 0 0 9999\r\n", b"stats\r\n", b"\r\n", b"\n",
    ]),
    st.binary(max_size=6),
)
_streams = st.lists(_commands, min_size=1, max_size=12).map(b"".join)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_streams, cut=st.integers(min_value=1, max_value=400))
def test_batched_parser_gives_the_plain_parsers_events(data: bytes, cut: int) -> None:
    assert parse(data, cut, batch=True) == parse(data, cut, batch=False)


def test_pipelined_canonical_publishes_come_out_as_one_batch() -> None:
    one = wire.set_command(b"publish", wire.record([b"t"], b"a"))
    two = wire.set_command(b"publish", wire.record([b"u"], b"bc"))
    parser = wire.CommandParser(batch_publishes=True)
    events = list(parser.feed(one + two + one + b"get messages\r\n" + one))
    assert events == [
        wire.Publishes([(b"t", b"a", b"MESSAGE t 1\r\na\r\n"), (b"u", b"bc", b"MESSAGE u 2\r\nbc\r\n"),
                        (b"t", b"a", b"MESSAGE t 1\r\na\r\n")]),
        wire.Get(b"messages"),
        wire.Publishes([(b"t", b"a", b"MESSAGE t 1\r\na\r\n")]),
    ]
    # a canonical command whose payload is split across reads waits whole for the rest
    assert list(parser.feed(one[:-3])) == []
    assert list(parser.feed(one[-3:])) == [wire.Publishes([(b"t", b"a", b"MESSAGE t 1\r\na\r\n")])]


def _plain(conn: Conn) -> Conn:
    conn.protocol.session.parser.batch_publishes = False  # type: ignore[union-attr]
    return conn


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=_streams,
    cut=st.integers(min_value=1, max_value=400),
    subscribe=st.sampled_from([b"t", b"t u", b"u a.b", b"zz"]),
    pattern=st.booleans(),
)
def test_batched_server_path_delivers_and_retains_as_the_plain_one(
    data: bytes, cut: int, subscribe: bytes, pattern: bool
) -> None:
    outcomes = []
    for batch in (True, False):
        h = Harness(retained=3, max_line=100, max_value=300)
        sub = h.connect()
        sub.send(wire.set_command(b"subscribe", subscribe))
        if pattern:
            sub.send(wire.set_command(b"psubscribe", b"a.*"))
        other = h.connect()
        other.send(b"get register\r\n")
        pub = h.connect() if batch else _plain(h.connect())
        replies = pub.send(data, chunk=cut)
        delivered = sub.send(b"get messages\r\n")
        replayed = other.send(wire.set_command(b"subscribe", b"t u a.b"))
        replayed += other.send(b"get messages\r\n")
        retained = [list(shard.entries) for shard in h.router.retained]
        complete = [(s.complete_after_seq, s.complete_after_time) for s in h.router.retained]
        stats = (h.router.seq, h.router.stats.publishes, h.router.stats.published, h.router.stats.delivered)
        outcomes.append((replies, pub.closed, delivered, replayed, retained, complete, stats))
    assert outcomes[0] == outcomes[1]


def test_a_publisher_does_not_receive_its_own_batch_and_runs_stay_in_order() -> None:
    h = Harness()
    a, b = h.connect(), h.connect()
    for conn in (a, b):
        conn.send(b"set subscribe 0 0 3\r\nt u\r\n")
    topics = [b"t", b"u"] * 40
    body = b"".join(wire.set_command(b"publish", wire.record([t], b"%d" % i)) for i, t in enumerate(topics))
    assert a.send(body) == wire.STORED * 80
    assert a.send(b"get messages\r\n") == b"END\r\n"
    records = wire.ReplyParser().feed(b.send(b"get messages\r\n"))[0].records()
    assert records == [([t], b"%d" % i) for i, t in enumerate(topics)]


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(min_value=0, max_value=5),
    batches=st.lists(st.integers(min_value=0, max_value=8), max_size=6),
)
def test_retained_extend_is_add_one_by_one(capacity: int, batches: list[int]) -> None:
    one_by_one, extended = RetainedShard(capacity, 10.0), RetainedShard(capacity, 10.0)
    seq = 0
    for size in batches:
        new: list[Entry] = [(seq + i + 1, 10.0 + seq + i, 0, (b"t",), b"", 1, True) for i in range(size)]
        seq += size
        for entry in new:
            one_by_one.add(entry)
        extended.extend(new)
        assert list(extended.entries) == list(one_by_one.entries)
        assert (extended.complete_after_seq, extended.complete_after_time) == (
            one_by_one.complete_after_seq, one_by_one.complete_after_time
        )
