"""The malformed-input table (spec 2.6) with our replies, limits, and a fuzz of the codec."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kraken.core.wire import WireError
from kraken.pubsub import wire
from kraken.pubsub.testing import Harness

BAD_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
BAD_CHUNK = b"CLIENT_ERROR bad data chunk\r\n"
LF_ONLY = b"CLIENT_ERROR line must end with CRLF\r\n"

# input on a fresh connection -> our reply before the close (the original closed silently
# in most of these cases; see docs/pubsub.md)
TABLE = [
    (b"get messages\n", LF_ONLY),
    (b"get foo\r\n", b"ERROR\r\n"),
    (b"get messages foo\r\n", BAD_FORMAT),
    (b"get  messages\r\n", BAD_FORMAT),
    (b"get \r\n", BAD_FORMAT),
    (b"get\r\n", b"ERROR\r\n"),
    (b"get quit\r\n", b"ERROR\r\n"),
    (b"get subscribe\r\n", b"ERROR\r\n"),
    (b"GET messages\r\n", b"ERROR\r\n"),
    (b"QUIT\r\n", b"ERROR\r\n"),
    (b"quit\n", LF_ONLY),
    (b"quit \r\n", b"ERROR\r\n"),
    (b"stats\r\n", b"ERROR\r\n"),
    (b"version\r\n", b"ERROR\r\n"),
    (b"delete foo\r\n", b"ERROR\r\n"),
    (b"\r\n", b"ERROR\r\n"),
    (b"set foo 0 0 3\r\nabc\r\n", b"ERROR\r\n"),
    (b"set messages 0 0 3\r\nabc\r\n", b"ERROR\r\n"),
    (b"set SUBSCRIBE 0 0 1\r\na\r\n", b"ERROR\r\n"),
    (b"set subscribe 0 0\r\n", BAD_FORMAT),
    (b"set subscribe 0 0 1 noreply\r\n", b"CLIENT_ERROR noreply is not supported\r\n"),
    (b"set subscribe 0 0 abc\r\n", BAD_CHUNK),
    (b"set subscribe 0 0 1\n", LF_ONLY),
    (b"set subscribe 0 0 2\r\nabc\r\n", BAD_CHUNK),
    (b"set subscribe 0 0 1\r\naX\n", BAD_CHUNK),
    (b"set subscribe 0 0 -2\r\n", BAD_CHUNK),
    (b"set publish 0 0 5\r\nhello\r\n", b"CLIENT_ERROR bad publish body\r\n"),
    (b"set publish 0 0 17\r\nMESSAGE a 5\r\nhi\r\n\r\n", b"CLIENT_ERROR bad publish body\r\n"),
    (b"set publish 0 0 15\r\nMESSAGE a 2\r\nhi\r\n\r\n", b"CLIENT_ERROR bad publish body\r\n"),
    (b"set retro_subscribe 0 0 4\r\n1 t1\r\n", b"CLIENT_ERROR bad retro_subscribe data\r\n"),
    (b"set retro_subscribe 0 0 6\r\nx\r\nt1 \r\n", b"CLIENT_ERROR bad retro_subscribe data\r\n"),
]


@pytest.mark.parametrize(("data", "reply"), TABLE)
def test_malformed_input_gets_a_reply_then_close(data: bytes, reply: bytes) -> None:
    h = Harness()
    bystander, conn = h.connect(), h.connect()
    bystander.send(b"set subscribe 0 0 1\r\na\r\n")
    assert conn.send(data + b"get messages\r\n") == reply
    assert conn.closed
    assert h.factory.malformed == 1
    assert not bystander.closed
    assert bystander.send(b"get messages\r\n") == b"END\r\n"


def test_short_data_block_waits_for_more() -> None:
    h = Harness()
    conn = h.connect()
    assert conn.send(b"set subscribe 0 0 5\r\nabc\r\n") == b""
    assert not conn.closed
    assert conn.send(b"\r\n") == b"STORED\r\n"  # the data was b"abc\r\n" minus nothing: 5 bytes


def test_a_bad_publish_delivers_none_of_its_records() -> None:
    h = Harness()
    sub, pub = h.connect(), h.connect()
    sub.send(b"set subscribe 0 0 1\r\na\r\n")
    body = b"MESSAGE a 2\r\nok\r\nMESSAGE a 9\r\nbad\r\n"
    assert pub.send(wire.set_command(b"publish", body)) == b"CLIENT_ERROR bad publish body\r\n"
    assert sub.send(b"get messages\r\n") == b"END\r\n"


def test_overlong_line_and_value_are_refused() -> None:
    h = Harness(max_line=64, max_value=100)
    a = h.connect()
    assert a.send(b"x" * 65) == b"CLIENT_ERROR line too long\r\n"
    b = h.connect()
    too_big = b"CLIENT_ERROR value of 101 bytes is over the limit of 100\r\n"
    assert b.send(b"set publish 0 0 101\r\n") == too_big
    assert a.closed and b.closed


def test_max_clients() -> None:
    h = Harness(max_clients=3)
    conns = [h.connect() for _ in range(3)]
    assert all(c.send(b"get messages\r\n") == b"END\r\n" for c in conns)  # none of them idle
    extra = h.connect()
    assert extra.read() == b"SERVER_ERROR Too many clients\r\n"
    assert extra.closed
    assert all(c.send(b"get messages\r\n") == b"END\r\n" for c in conns)
    conns[0].send(b"quit\r\n")
    assert conns[0].closed
    again = h.connect()
    assert again.send(b"get messages\r\n") == b"END\r\n"
    assert h.factory.rejected == 1


def test_idle_timeout_closes_silently_and_traffic_resets_it() -> None:
    h = Harness(idle_timeout=3600)
    busy, idle = h.connect(), h.connect()
    assert busy.send(b"get messages\r\n") == idle.send(b"get messages\r\n") == b"END\r\n"
    h.clock.advance(3000)
    busy.send(b"get messages\r\n")
    h.clock.advance(700)
    assert idle.closed and idle.read() == b""
    assert not busy.closed
    h.clock.advance(2900)
    assert busy.closed
    assert h.factory.idle_closed == 2
    assert h.router.clients == {}


def test_queue_overflow_drops_oldest_and_counts() -> None:
    h = Harness(max_queue_messages=3, max_queue_bytes=10_000)
    sub, pub = h.connect(), h.connect()
    sub.send(b"set subscribe 0 0 1\r\na\r\n")
    for i in range(5):
        pub.send(wire.set_command(b"publish", wire.record([b"a"], b"m%d" % i)))
    got = wire.ReplyParser().feed(sub.send(b"get messages\r\n"))
    assert [p for _, p in got[0].records()] == [b"m2", b"m3", b"m4"]
    assert sub.protocol.session.client.dropped == 2
    h2 = Harness(max_queue_messages=100, max_queue_bytes=40)
    sub, pub = h2.connect(), h2.connect()
    sub.send(b"set subscribe 0 0 1\r\na\r\n")
    for i in range(3):
        pub.send(wire.set_command(b"publish", wire.record([b"a"], b"%020d" % i)))
    got = wire.ReplyParser().feed(sub.send(b"get messages\r\n"))
    assert [p for _, p in got[0].records()] == [b"%020d" % 2]


def parse_all(
    parser: wire.CommandParser, data: bytes, cut: int
) -> tuple[list[wire.Event], tuple[bytes, str] | None]:
    """Feed *data* in *cut*-byte pieces: the commands, and the refusal's (reply, reason) if any."""
    events: list[wire.Event] = []
    try:
        for i in range(0, len(data), cut):
            events.extend(parser.feed(data[i : i + cut]))
    except wire.MalformedCommand as e:
        return events, (e.reply, e.reason)
    return events, None


def test_a_malformed_command_raises_after_the_commands_before_it_and_ends_the_parser() -> None:
    parser = wire.CommandParser()
    commands = parser.feed(b"get messages\r\nset subscribe 0 0 1\r\na\r\nstats\r\nget messages\r\n")
    assert next(commands) == wire.Get(b"messages")
    assert next(commands) == wire.Set(b"subscribe", b"a")
    with pytest.raises(wire.MalformedCommand) as raised:
        next(commands)
    assert raised.value.reply == b"ERROR\r\n" and "unknown command" in raised.value.reason
    assert isinstance(raised.value, WireError) and parser.failed
    assert list(parser.feed(b"get messages\r\n")) == []


def test_quit_ends_the_parser() -> None:
    parser = wire.CommandParser()
    assert list(parser.feed(b"get messages\r\nquit\r\nget messages\r\n")) == [
        wire.Get(b"messages"),
        wire.Quit(),
    ]
    assert parser.failed and list(parser.feed(b"get messages\r\n")) == []


# --- fuzz ------------------------------------------------------------------------------------

_tokens = st.sampled_from(
    [b"get", b"set", b"messages", b"subscribe", b"publish", b"register", b"retro_subscribe",
     b"unsubscribe", b"quit", b"MESSAGE", b" ", b"  ", b"0", b"5", b"-1", b"\r\n", b"\n", b"\r",
     b"a", b"noreply", b"\x00\xff", b"17", b"1.5"]
)
_garbage = st.lists(st.one_of(_tokens, st.binary(max_size=8)), max_size=30).map(b"".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_garbage, cut=st.integers(min_value=1, max_value=16))
def test_fuzzed_input_never_crashes_and_bystanders_are_unaffected(data: bytes, cut: int) -> None:
    h = Harness(max_line=128, max_value=256)
    good, pub, bad = h.connect(), h.connect(), h.connect()
    good.send(b"set subscribe 0 0 1\r\na\r\n")
    bad.send(data, chunk=cut)
    parse_all(wire.CommandParser(), data, cut)
    pub.send(wire.set_command(b"publish", wire.record([b"a"], b"hello")))
    assert good.send(b"get messages\r\n") == b"VALUE messages 0 18\r\nMESSAGE a 5\r\nhello\r\nEND\r\n"


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=64))
def test_publish_body_parser_accepts_or_raises_wire_error(body: bytes) -> None:
    try:
        records = wire.parse_publish(body)
    except wire.WireError:
        return
    assert wire.publish_body(records) == body


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(
        st.tuples(st.lists(st.binary(max_size=6).filter(lambda t: b" " not in t and b"\r\n" not in t),
                           max_size=4),
                  st.binary(max_size=40)),
        max_size=5,
    ),
    cut=st.integers(min_value=1, max_value=50),
)
def test_publish_round_trip_through_the_command_parser(records: list, cut: int) -> None:
    body = wire.publish_body(records)
    data = wire.set_command(b"publish", body)
    assert parse_all(wire.CommandParser(), data, cut) == ([wire.Set(b"publish", body)], None)
    assert wire.parse_publish(body) == [(list(t), p) for t, p in records]


def test_a_client_that_does_not_read_is_not_read_from() -> None:
    h = Harness()
    conn = h.connect()
    transport = conn.transport
    assert transport.producer is conn.protocol and transport.streaming
    transport.producer.pauseProducing()  # what a full write buffer does
    assert transport.producerState == "paused"
    transport.producer.resumeProducing()
    assert transport.producerState == "producing"
    assert conn.send(b"quit\r\n") == b"" and transport.producer is None


@settings(max_examples=200, deadline=None)
@given(data=st.lists(st.one_of(st.sampled_from(
    [b"STORED\r\n", b"END\r\n", b"VALUE messages 0 ", b"\r\n", b"-2", b"17", b"CLIENT_ERROR x\r\n",
     b"MESSAGE a 2\r\nhi\r\n"]), st.binary(max_size=6)), max_size=12).map(b"".join))
def test_reply_parser_accepts_or_raises_wire_error(data: bytes) -> None:
    parser = wire.ReplyParser()
    try:
        for reply in parser.feed(data):
            try:
                reply.records()
            except wire.WireError:
                pass
    except wire.WireError:
        pass


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(
    st.binary(max_size=40),
    st.tuples(st.binary(max_size=5), st.binary(max_size=12), st.sampled_from([b"", b"0", b"+", b" "])).map(
        lambda t: b"MESSAGE %s %s%d\r\n%s\r\n" % (t[0], t[2], len(t[1]), t[1])
    ),
))
def test_single_record_fast_path_agrees_with_the_parser(body: bytes) -> None:
    single = wire.single_record(body)
    if single is None:
        return
    topic, payload = single
    assert wire.parse_publish(body) == [([topic], payload)]
    assert wire.record([topic], payload) == body


def test_non_canonical_length_is_delivered_canonically() -> None:
    h = Harness()
    sub, pub = h.connect(), h.connect()
    sub.send(b"set subscribe 0 0 1\r\na\r\n")
    assert wire.single_record(b"MESSAGE a 02\r\nhi\r\n") is None
    pub.send(wire.set_command(b"publish", b"MESSAGE a 02\r\nhi\r\n"))
    assert sub.send(b"get messages\r\n") == b"VALUE messages 0 15\r\nMESSAGE a 2\r\nhi\r\nEND\r\n"


_set_lines = st.tuples(
    st.sampled_from([b"subscribe", b"publish", b"register", b"messages", b"SUBSCRIBE"]),
    st.sampled_from([b"0", b"x", b"", b"0\r", b"a" * 70]),
    st.sampled_from([b"0", b"", b"y"]),
    st.sampled_from([b"0", b"3", b"+3", b"-1", b"9999999999999", b"3 noreply", b"3 "]),
    st.sampled_from([b"\r\n", b"\n"]),
    st.binary(max_size=8),
).map(lambda t: b"set %s %s %s %s%s%s\r\n" % t)


@settings(max_examples=300, deadline=None)
@given(data=st.lists(_set_lines, min_size=1, max_size=4).map(b"".join), cut=st.integers(1, 40))
def test_fast_set_line_path_agrees_with_the_general_parser(data: bytes, cut: int) -> None:
    import re

    def events(fast: bool) -> tuple[list[wire.Event], tuple[bytes, str] | None]:
        saved = wire._SET_LINE
        if not fast:
            wire._SET_LINE = re.compile(rb"(?!)")
        try:
            return parse_all(wire.CommandParser(max_line=100, max_value=10**6), data, cut)
        finally:
            wire._SET_LINE = saved

    assert events(True) == events(False)


def test_an_internal_error_costs_one_connection_only() -> None:
    h = Harness()
    good, victim = h.connect(), h.connect()
    good.send(b"set subscribe 0 0 1\r\na\r\n")

    def broken(*args: object) -> None:
        raise RuntimeError("simulated bug")

    victim.protocol.session._get = broken  # type: ignore[method-assign]
    from twisted.logger import globalLogPublisher

    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        assert victim.send(b"get messages\r\n") == b"SERVER_ERROR internal error\r\n"
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert victim.closed and not good.closed
    assert any(e.get("log_failure") is not None for e in seen)
    assert good.send(b"get messages\r\n") == b"END\r\n"
