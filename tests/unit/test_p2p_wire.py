"""The peer-wire codec and metainfo: round trips, the documented byte example, fuzzing."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kraken.core.digest import Digest
from kraken.p2p import wire
from kraken.p2p.bitfield import Bitfield
from kraken.p2p.metainfo import MetaInfo, MetaInfoError, generate, piece_length_for


def decode_all(data: bytes, step: int = 0) -> list[wire.Event]:
    dec = wire.Decoder()
    if not step:
        return dec.feed(data)
    out: list[wire.Event] = []
    for i in range(0, len(data), step):
        out += dec.feed(data[i : i + step])
    return out


def collapse(events: list[wire.Event]) -> list[object]:
    """Join consecutive piece chunks so split points do not matter."""
    out: list[object] = []
    for e in events:
        if isinstance(e, wire.PieceChunk) and out and isinstance(out[-1], tuple):
            out[-1] = ("chunk", e.index, out[-1][2] + bytes(e.data))
        elif isinstance(e, wire.PieceChunk):
            out.append(("chunk", e.index, bytes(e.data)))
        else:
            out.append(e)
    return out


def test_documented_byte_example() -> None:
    assert wire.encode_request(5) == bytes.fromhex("00000005 02 00000005")
    stream = wire.encode_payload_header(5, 3) + b"abc"
    assert stream == bytes.fromhex("00000009 03 00000005 00000003 616263")
    assert collapse(decode_all(stream, 1)) == [
        wire.PiecePayload(5, 3), ("chunk", 5, b"abc"), wire.PieceEnd(5)
    ]


def handshake(n: int = 13, have: tuple[int, ...] = (0, 12)) -> wire.Handshake:
    bf = Bitfield(n)
    for i in have:
        bf.set(i)
    return wire.Handshake(b"p" * 20, b"h" * 32, "c" * 64, "test/ns", bf, (b"n" * 20,))


def test_handshake_roundtrip() -> None:
    [h] = decode_all(wire.encode_handshake(handshake()))
    assert isinstance(h, wire.Handshake)
    assert h.peer_id == b"p" * 20 and h.namespace == "test/ns" and h.digest_hex == "c" * 64
    assert h.bitfield.indices() == [0, 12] and h.neighbours == (b"n" * 20,)


def test_handshake_of_a_sha512_blob() -> None:
    """A sha512 digest travels in a version-2 handshake; sha256 ones stay version 1 (older peers)."""
    long = dataclasses.replace(handshake(), digest_hex="d" * 128)
    frame = wire.encode_handshake(long)
    assert frame[5] == wire.VERSION_LONG_DIGEST
    assert wire.encode_handshake(handshake())[5] == wire.VERSION
    [h] = decode_all(frame)
    assert isinstance(h, wire.Handshake) and h.digest_hex == "d" * 128 and h.namespace == "test/ns"
    bad = bytearray(frame)
    bad[5 + 1 + 20 + 32] = 48  # a digest length no algorithm has
    with pytest.raises(wire.WireError, match="48 bytes"):
        decode_all(bytes(bad))
    with pytest.raises(ValueError):
        wire.encode_handshake(dataclasses.replace(handshake(), digest_hex="d" * 40))


def test_large_bitfield_has_no_small_ceiling() -> None:
    n = 1_000_000  # 4 TB at 4 MiB pieces
    [h] = decode_all(wire.encode_handshake(handshake(n, (0, n - 1))))
    assert h.bitfield.indices() == [0, n - 1]


def with_extra_byte(frame: bytes) -> bytes:
    return (int.from_bytes(frame[:4], "big") + 1).to_bytes(4, "big") + frame[4:] + b"\x00"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (bytes.fromhex("00000000 00"), "frame length 0"),
        (bytes.fromhex("7fffffff 01"), "exceeds the limit"),
        (bytes.fromhex("00000001 63"), "unknown message type 99"),
        (bytes.fromhex("00000003 02 0000"), "4-byte index"),
        (bytes.fromhex("00000002 07 00"), "COMPLETE carries no body"),
        (with_extra_byte(wire.encode_handshake(handshake())), "trailing"),
    ],
)
def test_malformed_frames_raise_wire_error(data: bytes, needle: str) -> None:
    dec = wire.Decoder()
    with pytest.raises(wire.WireError, match=needle):
        dec.feed(data)
    with pytest.raises(wire.WireError):
        dec.feed(b"more")


messages = st.one_of(
    st.integers(0, 2**32 - 1).map(wire.encode_request),
    st.integers(0, 2**32 - 1).map(wire.encode_announce),
    st.integers(0, 2**32 - 1).map(wire.encode_cancel),
    st.just(wire.encode_complete()),
    st.tuples(st.integers(0, 100), st.integers(0, 255), st.text(max_size=40)).map(
        lambda t: wire.encode_error(*t)
    ),
    st.tuples(st.integers(0, 1000), st.binary(max_size=300)).map(
        lambda t: wire.encode_payload_header(t[0], len(t[1])) + t[1]
    ),
    st.integers(0, 70).map(lambda n: wire.encode_handshake(handshake(n, tuple(range(0, n, 3))))),
    st.integers(0, 70).map(lambda n: wire.encode_handshake(
        dataclasses.replace(handshake(n, tuple(range(0, n, 5))), digest_hex="e" * 128))),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(messages, max_size=12), st.integers(1, 50))
def test_any_split_decodes_the_same(frames: list[bytes], step: int) -> None:
    stream = b"".join(frames)
    assert collapse(decode_all(stream, step)) == collapse(decode_all(stream))
    assert sum(1 for e in decode_all(stream) if not isinstance(e, (wire.PieceChunk, wire.PieceEnd))) == len(
        frames
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_never_crashes_the_decoder(data: bytes) -> None:
    dec = wire.Decoder(max_frame=4096, max_piece=4096)
    try:
        dec.feed(data)
    except wire.WireError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.lists(messages, min_size=1, max_size=5), st.data())
def test_mutated_streams_only_raise_wire_error(frames: list[bytes], data: st.DataObject) -> None:
    stream = bytearray(b"".join(frames))
    i = data.draw(st.integers(0, len(stream) - 1))
    stream[i] = data.draw(st.integers(0, 255))
    try:
        wire.Decoder(max_frame=1 << 16, max_piece=1 << 16).feed(bytes(stream))
    except wire.WireError:
        pass


def test_metainfo_pieces_and_info_hash(tmp_path: Path) -> None:
    data = os.urandom(10_000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    d = Digest.of_bytes(data)
    mi = generate(path, d, 4096)
    assert mi.num_pieces == 3 and mi.piece_size(2) == 10_000 - 8192
    again = MetaInfo.from_json(mi.to_json())
    assert again == mi and again.info_hash == mi.info_hash and len(mi.info_hash) == 32
    other = generate(path, d, 2048)
    assert other.info_hash != mi.info_hash


def test_metainfo_of_a_sha512_blob(tmp_path: Path) -> None:
    data = os.urandom(10_000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    d = Digest.of_bytes(data, "sha512")
    mi = generate(path, d, 4096)
    again = MetaInfo.from_json(mi.to_json())
    assert again.digest == d and again.info_hash == mi.info_hash
    assert all(len(h) == 32 for h in mi.piece_hashes)  # pieces stay SHA-256
    assert mi.info_hash != generate(path, Digest.of_bytes(data), 4096).info_hash


def test_metainfo_rejects_inconsistent_input() -> None:
    base = {"name": "a" * 64, "length": 10, "piece_length": 4, "piece_hashes": ["00" * 32] * 3}
    assert MetaInfo.from_dict(base).num_pieces == 3
    for change, needle in [
        ({"piece_hashes": ["00" * 32] * 2}, "2 piece hashes for 3 pieces"),
        ({"piece_hashes": ["00" * 31] * 3}, "32 bytes"),
        ({"name": "zz"}, "64 \\(sha256\\) or 128"),
        ({"piece_length": 0}, "piece length"),
        ({"length": "10"}, "integers"),
    ]:
        with pytest.raises(MetaInfoError, match=needle):
            MetaInfo.from_dict({**base, **change})
    with pytest.raises(MetaInfoError, match="lacks 'name'"):
        MetaInfo.from_dict({k: v for k, v in base.items() if k != "name"})


def test_piece_length_thresholds() -> None:
    table = {0: 1 << 20, 1 << 30: 16 << 20}
    assert piece_length_for(5, table) == 1 << 20
    assert piece_length_for(2 << 30, table) == 16 << 20
    assert piece_length_for(5) == 4 << 20
