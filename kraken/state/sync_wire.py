"""The parent/child sync codec (sans-IO): length-prefixed frames carrying one JSON message each.

A frame is a 4-byte big-endian body length, then the body: one kind byte and a UTF-8 JSON
object. Frames over :data:`MAX_FRAME` bytes, unknown kinds and bodies that are not JSON objects
are protocol errors: the decoder raises :class:`WireError` for the first one and ignores any
input after it.

A kind byte with the :data:`COMPRESSED` bit set carries its JSON zlib-compressed; the encoder
compresses bodies of :data:`COMPRESS_OVER` bytes or more (batches of nodes, where it pays), and
the decoder refuses one that inflates beyond :data:`MAX_INFLATED`. Batches of many nodes are
split by :func:`encode_batches` into frames of at most :data:`BATCH` nodes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NoReturn

from kraken.core import jsonlimits, wire
from kraken.core.jsonlimits import JSONLimitError
from kraken.core.jsontext import compact

MAX_FRAME = 1 << 20
MAX_INFLATED = 16 << 20
COMPRESSED = 0x80
COMPRESS_OVER = 4096
BATCH = 2000
_LEN = struct.Struct(">I")


class Kind(IntEnum):
    HELLO = 1  # child → parent: {"id": <child uuid>}
    WELCOME = 2  # parent → child: {"parent", "cfg", "dsc", "hello", "dead"}
    CFG = 3  # parent → child: {"node": <the child's Cfg>}
    DSC = 4  # child → parent: {"node": <the child's own Dsc>}
    ERROR = 5  # either way: {"message": ...}; the sender closes
    CFG_NODES = 6  # parent → sub-master: {"nodes": [Cfg of nodes below it], "deleted": [ids]}
    DSC_NODES = 7  # sub-master → parent: {"nodes": [Dsc of nodes below it]}


@dataclass(frozen=True)
class Message:
    kind: Kind
    body: dict[str, Any]


class WireError(wire.WireError):
    """A frame that breaks the sync protocol; the adapter answers it with an ERROR frame."""


def encode(kind: Kind, body: dict[str, Any], compress_over: int = COMPRESS_OVER) -> bytes:
    return _frame(kind, compact(body).encode(), compress_over)


def _frame(kind: Kind, text: bytes, compress_over: int = COMPRESS_OVER) -> bytes:
    if len(text) >= compress_over:
        payload = bytes([kind | COMPRESSED]) + zlib.compress(text, 1)
    else:
        payload = bytes([kind]) + text
    if len(payload) > MAX_FRAME:
        raise ValueError(f"sync message of {len(payload)} bytes exceeds the {MAX_FRAME}-byte limit")
    return _LEN.pack(len(payload)) + payload


def encode_batches(
    kind: Kind, nodes: Sequence[str], deleted: Iterable[str] = (), size: int = BATCH
) -> bytes:
    """Frames of *kind* carrying *nodes*, each already a JSON object's text (a store keeps its
    nodes' text), and *deleted* ids, at most *size* nodes a frame."""
    gone = list(deleted)
    frames = []
    for start in range(0, max(len(nodes), 1), size):
        batch = nodes[start : start + size]
        if not batch and not gone:
            continue
        extra = f',"deleted":{compact(gone)}' if start == 0 and gone else ""
        frames.append(_frame(kind, f'{{"nodes":[{",".join(batch)}]{extra}}}'.encode()))
    return b"".join(frames)


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_INFLATED)
    if inflater.unconsumed_tail or not inflater.eof:
        raise ValueError(f"inflates beyond {MAX_INFLATED} bytes or is truncated")
    return out


class Decoder:
    """Feed bytes, iterate the :class:`Message` events they complete.

    The first malformed frame raises :class:`WireError` from the iteration, after the messages
    that came before it; from then on the decoder ignores its input.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self.failed = False

    def feed(self, data: bytes) -> Iterator[Message]:
        if not self.failed:
            self._buf += data
        return self._messages()

    def _messages(self) -> Iterator[Message]:
        while not self.failed and len(self._buf) >= 4:
            (size,) = _LEN.unpack_from(self._buf)
            if size == 0 or size > self.max_frame:
                self._fail(f"frame length {size} outside 1..{self.max_frame}")
            if len(self._buf) < 4 + size:
                return
            body = bytes(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            try:
                kind = Kind(body[0] & ~COMPRESSED)
            except ValueError:
                self._fail(f"unknown message kind {body[0]}")
            text = body[1:]
            if body[0] & COMPRESSED:
                try:
                    text = _inflate(text)
                except (zlib.error, ValueError) as e:
                    self._fail(f"{kind.name} body does not inflate: {e}")
            try:
                value = jsonlimits.loads(text)
            except JSONLimitError as e:
                self._fail(f"{kind.name} body {e}")
            except (UnicodeDecodeError, ValueError):
                self._fail(f"{kind.name} body is not JSON")
            if not isinstance(value, dict):
                self._fail(f"{kind.name} body is not a JSON object")
            yield Message(kind, value)

    def _fail(self, reason: str) -> NoReturn:
        self.failed = True
        self._buf.clear()
        raise WireError(reason)
