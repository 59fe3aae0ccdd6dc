"""The parent/child sync codec (sans-IO): length-prefixed frames carrying one JSON message each.

A frame is a 4-byte big-endian body length, then the body: one kind byte and a UTF-8 JSON
object. Frames over :data:`MAX_FRAME` bytes, unknown kinds and bodies that are not JSON objects
are protocol errors; the decoder reports the first one and stops.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

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


@dataclass(frozen=True)
class WireError:
    message: str


def encode(kind: Kind, body: dict[str, Any]) -> bytes:
    payload = bytes([kind]) + json.dumps(body, separators=(",", ":")).encode()
    if len(payload) > MAX_FRAME:
        raise ValueError(f"sync message of {len(payload)} bytes exceeds the {MAX_FRAME}-byte limit")
    return _LEN.pack(len(payload)) + payload


class Decoder:
    """Feed bytes, get :class:`Message` and at most one :class:`WireError` back."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self.failed = False

    def feed(self, data: bytes) -> list[Message | WireError]:
        if self.failed:
            return []
        self._buf += data
        out: list[Message | WireError] = []
        while len(self._buf) >= 4:
            (size,) = _LEN.unpack_from(self._buf)
            if size == 0 or size > self.max_frame:
                return self._fail(out, f"frame length {size} outside 1..{self.max_frame}")
            if len(self._buf) < 4 + size:
                break
            body = bytes(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            try:
                kind = Kind(body[0])
            except ValueError:
                return self._fail(out, f"unknown message kind {body[0]}")
            try:
                value = json.loads(body[1:])
            except (UnicodeDecodeError, ValueError):
                return self._fail(out, f"{kind.name} body is not JSON")
            if not isinstance(value, dict):
                return self._fail(out, f"{kind.name} body is not a JSON object")
            out.append(Message(kind, value))
        return out

    def _fail(self, out: list[Message | WireError], message: str) -> list[Message | WireError]:
        self.failed = True
        self._buf.clear()
        out.append(WireError(message))
        return out
