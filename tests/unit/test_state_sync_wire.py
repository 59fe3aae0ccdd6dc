"""The sync codec: frames round-trip in any split, bad input is one clear error, never a crash."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from kraken.state.sync_wire import MAX_FRAME, Decoder, Kind, Message, WireError, encode


def test_round_trip_in_any_split() -> None:
    frames = encode(Kind.HELLO, {"id": "x"}) + encode(Kind.DSC, {"node": {"id": "y", "físico": "ñ"}})
    for cut in range(len(frames) + 1):
        d = Decoder()
        out = d.feed(frames[:cut]) + d.feed(frames[cut:])
        assert out == [
            Message(Kind.HELLO, {"id": "x"}),
            Message(Kind.DSC, {"node": {"id": "y", "físico": "ñ"}}),
        ]


def test_errors_are_values_and_stop_the_decoder() -> None:
    cases = {
        struct.pack(">I", 0): "outside",
        struct.pack(">I", MAX_FRAME + 1): "outside",
        struct.pack(">I", 3) + b"\x63{}": "unknown message kind 99",
        struct.pack(">I", 3) + b"\x01{x": "not JSON",
        struct.pack(">I", 3) + b"\x01[]": "not a JSON object",
        struct.pack(">I", 3) + b"\x01\xff\xfe": "not JSON",
    }
    for data, message in cases.items():
        d = Decoder()
        out = d.feed(encode(Kind.CFG, {}) + data + encode(Kind.CFG, {}))
        assert out[0] == Message(Kind.CFG, {})
        assert isinstance(out[1], WireError) and message in out[1].message
        assert len(out) == 2 and d.failed and d.feed(encode(Kind.CFG, {})) == []


def test_oversized_messages_are_refused_on_encode() -> None:
    try:
        encode(Kind.CFG, {"blob": "x" * MAX_FRAME})
    except ValueError as e:
        assert "exceeds" in str(e)
    else:
        raise AssertionError("an oversized frame was encoded")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_fuzzed_bytes_never_crash(chunks: list[bytes]) -> None:
    d = Decoder(max_frame=64)
    out = []
    for chunk in chunks:
        out += d.feed(chunk)
    assert all(isinstance(x, (Message, WireError)) for x in out)
    assert sum(isinstance(x, WireError) for x in out) <= 1
