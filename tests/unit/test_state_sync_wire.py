"""The sync codec: frames round-trip in any split, bad input is one clear error, never a crash."""

from __future__ import annotations

import json
import os
import struct
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kraken.core import wire
from kraken.core.jsontext import compact
from kraken.state.sync_wire import (
    COMPRESSED,
    MAX_FRAME,
    MAX_INFLATED,
    Decoder,
    Kind,
    Message,
    WireError,
    encode,
    encode_batches,
)


def test_round_trip_in_any_split() -> None:
    frames = encode(Kind.HELLO, {"id": "x"}) + encode(Kind.DSC, {"node": {"id": "y", "físico": "ñ"}})
    for cut in range(len(frames) + 1):
        d = Decoder()
        out = list(d.feed(frames[:cut])) + list(d.feed(frames[cut:]))
        assert out == [
            Message(Kind.HELLO, {"id": "x"}),
            Message(Kind.DSC, {"node": {"id": "y", "físico": "ñ"}}),
        ]


def test_errors_are_raised_after_the_messages_before_them_and_stop_the_decoder() -> None:
    cases = {
        struct.pack(">I", 0): "outside",
        struct.pack(">I", MAX_FRAME + 1): "outside",
        struct.pack(">I", 3) + b"\x63{}": "unknown message kind 99",
        struct.pack(">I", 3) + b"\x01{x": "not JSON",
        struct.pack(">I", 3) + b"\x01[]": "not a JSON object",
        struct.pack(">I", 3) + b"\x01\xff\xfe": "not JSON",
    }
    for data, reason in cases.items():
        d = Decoder()
        messages = d.feed(encode(Kind.CFG, {}) + data + encode(Kind.CFG, {}))
        assert next(messages) == Message(Kind.CFG, {})
        with pytest.raises(WireError) as raised:
            next(messages)
        assert reason in raised.value.reason and isinstance(raised.value, wire.WireError)
        assert d.failed and list(d.feed(encode(Kind.CFG, {}))) == []


def test_bytes_fed_are_kept_until_their_messages_are_read() -> None:
    d = Decoder()
    d.feed(encode(Kind.HELLO, {"id": "x"}))
    assert list(d.feed(b"")) == [Message(Kind.HELLO, {"id": "x"})]


def test_oversized_messages_are_refused_on_encode() -> None:
    try:
        encode(Kind.CFG, {"blob": os.urandom(MAX_FRAME).hex()})  # does not compress below the limit
    except ValueError as e:
        assert "exceeds" in str(e)
    else:
        raise AssertionError("an oversized frame was encoded")


def decode_all(d: Decoder, chunks: list[bytes]) -> tuple[list[Message], WireError | None]:
    out: list[Message] = []
    for chunk in chunks:
        try:
            out.extend(d.feed(chunk))
        except WireError as e:
            assert d.failed and all(list(d.feed(c)) == [] for c in chunks)
            return out, e
    return out, None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_fuzzed_bytes_never_crash(chunks: list[bytes]) -> None:
    out, _ = decode_all(Decoder(max_frame=64), chunks)
    assert all(isinstance(x, Message) for x in out)


_bodies = st.dictionaries(
    st.text(max_size=5), st.one_of(st.none(), st.integers(-1000, 1000), st.text(max_size=5)), max_size=3
)
# garbage with a plausible length prefix reaches the kind and JSON checks, unlike random bytes
_garbage = st.one_of(
    st.tuples(st.integers(0, 255), st.binary(max_size=30)).map(
        lambda t: struct.pack(">I", 1 + len(t[1])) + bytes([t[0]]) + t[1]
    ),
    st.binary(max_size=8),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(Kind), _bodies), max_size=4), _garbage, st.integers(1, 20))
def test_fuzzed_input_after_valid_frames_never_loses_them(
    valid: list[tuple[Kind, dict[str, Any]]], garbage: bytes, cut: int
) -> None:
    data = b"".join(encode(kind, body) for kind, body in valid) + garbage
    out, _ = decode_all(Decoder(), [data[i : i + cut] for i in range(0, len(data), cut)])
    assert out[: len(valid)] == [Message(kind, body) for kind, body in valid]
    assert len(out) <= len(valid) + 1


def test_large_bodies_are_compressed_and_batches_split() -> None:
    nodes = [{"id": f"00000000-0000-0000-0000-{i:012d}", "physState": "POWER_ON"} for i in range(4500)]
    data = encode_batches(Kind.DSC_NODES, [compact(n) for n in nodes], ["gone"], size=2000)
    raw = sum(len(json.dumps(n)) for n in nodes)
    assert len(data) < raw / 5  # compressed
    out = list(Decoder().feed(data))
    assert [len(m.body["nodes"]) for m in out] == [2000, 2000, 500]
    assert out[0].body["deleted"] == ["gone"] and "deleted" not in out[1].body
    assert [n for m in out for n in m.body["nodes"]] == nodes
    small = encode(Kind.CFG, {"node": {"id": "x"}})
    assert not small[4] & COMPRESSED
    assert encode_batches(Kind.CFG_NODES, []) == b""


def test_a_body_that_inflates_too_far_or_is_broken_is_refused() -> None:
    bomb = zlib.compress(b'{"a":"' + b"x" * (MAX_INFLATED + 10) + b'"}', 9)
    for body, reason in ((bomb, "inflates beyond"), (b"not zlib", "does not inflate")):
        frame = struct.pack(">I", 1 + len(body)) + bytes([Kind.DSC_NODES | COMPRESSED]) + body
        with pytest.raises(WireError) as e:
            list(Decoder().feed(frame))
        assert reason in e.value.reason
