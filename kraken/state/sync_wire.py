"""The parent/child sync codec (sans-IO): length-prefixed frames carrying one JSON message each.

A frame is a 4-byte big-endian body length, then the body: one kind byte and a UTF-8 JSON
object. Frames over :data:`MAX_FRAME` bytes, unknown kinds and bodies that are not JSON objects
are protocol errors: the decoder raises :class:`WireError` for the first one and ignores any
input after it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, NoReturn

from kraken.core import jsonlimits, wire
from kraken.core.jsonlimits import JSONLimitError

MAX_FRAME = 1 << 20
_LEN = struct.Struct(">I")


class Kind(IntEnum):
    HELLO = 1  # child → parent: {"id": <child uuid>}
    WELCOME = 2  # parent → child: {"parent", "cfg", "dsc", "hello", "dead"}
    CFG = 3  # parent → child: {"node": <the child's Cfg>}
    DSC = 4  # child → parent: {"node": <the child's own Dsc>}
    ERROR = 5  # either way: {"message": ...}; the sender closes


@dataclass(frozen=True)
class Message:
    kind: Kind
    body: dict[str, Any]


class WireError(wire.WireError):
    """A frame that breaks the sync protocol; the adapter answers it with an ERROR frame."""


def encode(kind: Kind, body: dict[str, Any]) -> bytes:
    payload = bytes([kind]) + json.dumps(body, separators=(",", ":")).encode()
    if len(payload) > MAX_FRAME:
        raise ValueError(f"sync message of {len(payload)} bytes exceeds the {MAX_FRAME}-byte limit")
    return _LEN.pack(len(payload)) + payload


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
                kind = Kind(body[0])
            except ValueError:
                self._fail(f"unknown message kind {body[0]}")
            try:
                value = jsonlimits.loads(body[1:])
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
