"""The peer-wire codec (sans-IO): bytes in → events out, messages in → bytes out.

Every message is a frame: ``u32 length`` (big-endian, counts the type byte and the body),
``u8 type``, body. Integers are big-endian. Types:

====  ===============  ==============================================================
 1    HANDSHAKE        u8 version=1 | peer id (20) | info hash (32) | digest (32 raw)
                       (version 2: u8 n + digest (n raw: 32 sha256, 64 sha512))
                       | u16 len + namespace (UTF-8) | u32 piece count | bitfield
                       ⌈count/8⌉ bytes, MSB first | u16 n + n neighbour peer ids (20 each)
 2    PIECE_REQUEST    u32 index (always the whole piece)
 3    PIECE_PAYLOAD    u32 index | u32 length — then exactly *length* raw bytes follow the
                       frame on the stream (not counted in the frame length)
 4    ANNOUNCE_PIECE   u32 index ("I now have piece index")
 5    CANCEL_PIECE     u32 index
 6    ERROR            u32 index | u8 code | u16 len + message (UTF-8)
 7    COMPLETE         (empty) — the sender has every piece
====  ===============  ==============================================================

Example: a request for piece 5 is ``00 00 00 05 02 00 00 00 05``; the reply with a 3-byte
piece ``61 62 63`` is ``00 00 00 09 03 00 00 00 05 00 00 00 03 61 62 63``.

Frames (not piece payloads) may be at most ``max_frame`` bytes (8 MiB by default: a
bitfield of 64 M pieces, i.e. 256 TB at 4 MiB pieces) so the handshake has no practical size
ceiling. The decoder hands piece payloads out in the chunks the network delivered them
(:class:`PieceChunk`), so a piece is never assembled in memory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kraken.core.wire import WireError as CoreWireError
from kraken.p2p.bitfield import Bitfield, BitfieldError

VERSION = 1
VERSION_LONG_DIGEST = 2  # sent only for blobs whose digest is not SHA-256; peers read both
_DIGEST_ALGOS = {32: "sha256", 64: "sha512"}
PEER_ID_LEN = 20
INFO_HASH_LEN = 32
DEFAULT_MAX_FRAME = 8 * 1024 * 1024
DEFAULT_MAX_PIECE = 256 * 1024 * 1024

T_HANDSHAKE, T_REQUEST, T_PAYLOAD, T_ANNOUNCE, T_CANCEL, T_ERROR, T_COMPLETE = range(1, 8)

E_REQUEST_FAILED = 0
E_BAD_MESSAGE = 1
E_UNKNOWN_BLOB = 2
E_REFUSED = 3


class WireError(CoreWireError):
    """The peer sent bytes that are not a valid message; the connection cannot continue."""


@dataclass(frozen=True)
class Handshake:
    peer_id: bytes
    info_hash: bytes
    digest_hex: str
    namespace: str
    bitfield: Bitfield
    neighbours: tuple[bytes, ...] = ()
    version: int = VERSION


@dataclass(frozen=True)
class PieceRequest:
    index: int


@dataclass(frozen=True)
class PiecePayload:
    """Start of a piece; *length* raw bytes follow as :class:`PieceChunk` events, then :class:`PieceEnd`."""

    index: int
    length: int


@dataclass(frozen=True)
class PieceChunk:
    index: int
    data: bytes | memoryview


@dataclass(frozen=True)
class PieceEnd:
    index: int


@dataclass(frozen=True)
class AnnouncePiece:
    index: int


@dataclass(frozen=True)
class CancelPiece:
    index: int


@dataclass(frozen=True)
class ErrorMessage:
    index: int
    code: int
    message: str


@dataclass(frozen=True)
class Complete:
    pass


Event = (
    Handshake | PieceRequest | PiecePayload | PieceChunk | PieceEnd | AnnouncePiece | CancelPiece
    | ErrorMessage | Complete
)

_U32 = struct.Struct(">I")
_HEAD = struct.Struct(">IB")


def _frame(kind: int, body: bytes = b"") -> bytes:
    return _HEAD.pack(len(body) + 1, kind) + body


def encode_handshake(h: Handshake) -> bytes:
    if len(h.peer_id) != PEER_ID_LEN or len(h.info_hash) != INFO_HASH_LEN:
        raise ValueError("peer id must be 20 bytes and info hash 32 bytes")
    ns = h.namespace.encode("utf-8")
    if len(ns) > 0xFFFF or len(h.neighbours) > 0xFFFF:
        raise ValueError("namespace or neighbour list too long")
    if any(len(n) != PEER_ID_LEN for n in h.neighbours):
        raise ValueError("neighbour peer ids must be 20 bytes")
    digest = bytes.fromhex(h.digest_hex)
    if len(digest) not in _DIGEST_ALGOS:
        raise ValueError("digest must be 32 (sha256) or 64 (sha512) bytes")
    if len(digest) == 32:
        head = bytes([h.version]) + h.peer_id + h.info_hash + digest
    else:
        head = bytes([VERSION_LONG_DIGEST]) + h.peer_id + h.info_hash + bytes([len(digest)]) + digest
    body = (
        head
        + struct.pack(">H", len(ns))
        + ns
        + _U32.pack(h.bitfield.size)
        + h.bitfield.to_bytes()
        + struct.pack(">H", len(h.neighbours))
        + b"".join(h.neighbours)
    )
    return _frame(T_HANDSHAKE, body)


def encode_request(index: int) -> bytes:
    return _frame(T_REQUEST, _U32.pack(index))


def encode_payload_header(index: int, length: int) -> bytes:
    """The frame that announces *length* raw piece bytes; the caller writes those next."""
    return _frame(T_PAYLOAD, struct.pack(">II", index, length))


def encode_announce(index: int) -> bytes:
    return _frame(T_ANNOUNCE, _U32.pack(index))


def encode_cancel(index: int) -> bytes:
    return _frame(T_CANCEL, _U32.pack(index))


def encode_error(index: int, code: int, message: str) -> bytes:
    msg = message.encode("utf-8")[:1024]
    return _frame(T_ERROR, struct.pack(">IBH", index, code, len(msg)) + msg)


def encode_complete() -> bytes:
    return _frame(T_COMPLETE)


class _Reader:
    def __init__(self, body: bytes, kind: str) -> None:
        self.body, self.pos, self.kind = body, 0, kind

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.body):
            raise WireError(f"{self.kind} message truncated")
        out = self.body[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def done(self) -> None:
        if self.pos != len(self.body):
            raise WireError(f"{self.kind} message has {len(self.body) - self.pos} trailing bytes")


def _parse(kind: int, body: bytes) -> Event:
    if kind == T_HANDSHAKE:
        r = _Reader(body, "HANDSHAKE")
        version = r.take(1)[0]
        if version not in (VERSION, VERSION_LONG_DIGEST):
            raise WireError(f"unsupported peer-wire version {version}")
        peer_id, info_hash = r.take(PEER_ID_LEN), r.take(INFO_HASH_LEN)
        digest_length = 32 if version == VERSION else r.take(1)[0]
        if digest_length not in _DIGEST_ALGOS:
            raise WireError(f"HANDSHAKE digest of {digest_length} bytes (32 or 64 expected)")
        digest = r.take(digest_length)
        try:
            namespace = r.take(r.u16()).decode("utf-8")
        except UnicodeDecodeError:
            raise WireError("HANDSHAKE namespace is not UTF-8") from None
        count = r.u32()
        try:
            bitfield = Bitfield(count, r.take((count + 7) // 8))
        except BitfieldError as e:
            raise WireError(f"HANDSHAKE bitfield: {e}") from None
        neighbours = tuple(r.take(PEER_ID_LEN) for _ in range(r.u16()))
        r.done()
        return Handshake(peer_id, info_hash, digest.hex(), namespace, bitfield, neighbours, VERSION)
    if kind in (T_REQUEST, T_ANNOUNCE, T_CANCEL):
        if len(body) != 4:
            raise WireError(f"message type {kind} must carry exactly a 4-byte index")
        index = _U32.unpack(body)[0]
        if kind == T_REQUEST:
            return PieceRequest(index)
        return AnnouncePiece(index) if kind == T_ANNOUNCE else CancelPiece(index)
    if kind == T_PAYLOAD:
        if len(body) != 8:
            raise WireError("PIECE_PAYLOAD header must be 8 bytes")
        index, length = struct.unpack(">II", body)
        return PiecePayload(index, length)
    if kind == T_ERROR:
        r = _Reader(body, "ERROR")
        index, code = r.u32(), r.take(1)[0]
        message = r.take(r.u16()).decode("utf-8", "replace")
        r.done()
        return ErrorMessage(index, code, message)
    if kind == T_COMPLETE:
        if body:
            raise WireError("COMPLETE carries no body")
        return Complete()
    raise WireError(f"unknown message type {kind}")


class Decoder:
    """Feed it bytes as they arrive; it returns the events they complete.

    After a :class:`WireError` the decoder is unusable (the stream has lost its framing).
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, max_piece: int = DEFAULT_MAX_PIECE) -> None:
        self.max_frame = max_frame
        self.max_piece = max_piece
        self._buf = bytearray()
        self._raw_left = 0
        self._raw_index = 0
        self._broken: WireError | None = None

    def feed(self, data: bytes) -> list[Event]:
        if self._broken is not None:
            raise self._broken
        try:
            return self._feed(data)
        except WireError as e:
            self._broken = e
            raise

    def _feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        view = memoryview(data)
        pos = 0
        if self._buf:
            self._buf += data
            view = memoryview(bytes(self._buf))
            self._buf.clear()
        n = len(view)
        while pos < n:
            if self._raw_left:
                take = min(self._raw_left, n - pos)
                events.append(PieceChunk(self._raw_index, view[pos : pos + take]))
                pos += take
                self._raw_left -= take
                if not self._raw_left:
                    events.append(PieceEnd(self._raw_index))
                continue
            if n - pos < 5:
                break
            length = _U32.unpack_from(view, pos)[0]
            if length == 0:
                raise WireError("frame length 0 (a frame holds at least its type byte)")
            if length > self.max_frame:
                raise WireError(f"frame of {length} bytes exceeds the limit of {self.max_frame}")
            if n - pos < 4 + length:
                break
            kind = view[pos + 4]
            event = _parse(kind, bytes(view[pos + 5 : pos + 4 + length]))
            pos += 4 + length
            events.append(event)
            if isinstance(event, PiecePayload):
                if event.length > self.max_piece:
                    raise WireError(f"piece payload of {event.length} bytes exceeds {self.max_piece}")
                if event.length:
                    self._raw_left, self._raw_index = event.length, event.index
                else:
                    events.append(PieceEnd(event.index))
        if pos < n:
            self._buf += view[pos:]
        return events
