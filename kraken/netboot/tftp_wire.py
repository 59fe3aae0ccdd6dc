"""TFTP packets (RFC 1350) with option negotiation (RFC 2347/2348/2349), sans-IO.

:func:`decode` turns one datagram into a packet object or raises :class:`WireError`;
the ``encode_*`` functions build datagrams. Only what a boot server needs is decoded: read and
write requests, acknowledgements and errors (a server never receives DATA or OACK on its
listening port, and a transfer socket answers them with an error).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from kraken.core import wire

MAX_FILENAME = 255
MAX_OPTIONS = 16


class Opcode(IntEnum):
    RRQ = 1
    WRQ = 2
    DATA = 3
    ACK = 4
    ERROR = 5
    OACK = 6


class ErrorCode(IntEnum):
    NOT_DEFINED = 0
    FILE_NOT_FOUND = 1
    ACCESS_VIOLATION = 2
    DISK_FULL = 3
    ILLEGAL_OPERATION = 4
    UNKNOWN_TID = 5
    FILE_EXISTS = 6
    NO_SUCH_USER = 7
    OPTION_REFUSED = 8


class WireError(wire.WireError):
    """A datagram that is not a TFTP packet this server understands."""


@dataclass(frozen=True)
class Request:
    opcode: Opcode  # RRQ or WRQ
    filename: str
    mode: str
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Ack:
    block: int


@dataclass(frozen=True)
class Error:
    code: int
    message: str


@dataclass(frozen=True)
class Data:
    block: int
    payload: bytes


Packet = Request | Ack | Error | Data

_OP = struct.Struct(">H")
_OP_BLOCK = struct.Struct(">HH")


def _strings(body: bytes) -> list[str]:
    if not body.endswith(b"\0"):
        raise WireError("request strings are not NUL-terminated")
    parts = body[:-1].split(b"\0")
    try:
        return [p.decode("ascii") for p in parts]
    except UnicodeDecodeError:
        raise WireError("request strings are not ASCII") from None


def _request(opcode: Opcode, body: bytes) -> Request:
    parts = _strings(body)
    if len(parts) < 2 or len(parts) % 2:
        raise WireError("a request needs a filename, a mode and option name/value pairs")
    filename, mode = parts[0], parts[1].lower()
    if not filename or len(filename) > MAX_FILENAME:
        raise WireError(f"filename must be 1 to {MAX_FILENAME} characters")
    if mode not in ("octet", "netascii", "mail"):
        raise WireError(f"unknown transfer mode {parts[1]!r}")
    pairs = parts[2:]
    if len(pairs) // 2 > MAX_OPTIONS:
        raise WireError(f"more than {MAX_OPTIONS} options")
    options = {pairs[i].lower(): pairs[i + 1] for i in range(0, len(pairs), 2)}
    return Request(opcode, filename, mode, options)


def decode(datagram: bytes) -> Packet:
    if len(datagram) < 4:
        raise WireError("datagram shorter than a TFTP header")
    (op,) = _OP.unpack_from(datagram)
    body = datagram[2:]
    if op in (Opcode.RRQ, Opcode.WRQ):
        return _request(Opcode(op), body)
    if op == Opcode.ACK:
        if len(datagram) != 4:
            raise WireError("an ACK is exactly 4 bytes")
        return Ack(_OP_BLOCK.unpack(datagram)[1])
    if op == Opcode.DATA:
        return Data(_OP_BLOCK.unpack_from(datagram)[1], datagram[4:])
    if op == Opcode.ERROR:
        code = _OP_BLOCK.unpack_from(datagram)[1]
        return Error(code, datagram[4:].split(b"\0", 1)[0].decode("ascii", "replace"))
    raise WireError(f"unknown opcode {op}")


def encode_data(block: int, payload: bytes) -> bytes:
    return _OP_BLOCK.pack(Opcode.DATA, block & 0xFFFF) + payload


def encode_ack(block: int) -> bytes:
    return _OP_BLOCK.pack(Opcode.ACK, block & 0xFFFF)


def encode_error(code: ErrorCode, message: str) -> bytes:
    text = message.encode("ascii", "replace")[:200]
    return _OP_BLOCK.pack(Opcode.ERROR, code) + text + b"\0"


def encode_oack(options: dict[str, str]) -> bytes:
    body = b"".join(k.encode("ascii") + b"\0" + v.encode("ascii") + b"\0" for k, v in options.items())
    return _OP.pack(Opcode.OACK) + body


def encode_request(request: Request) -> bytes:
    """A client's request; used by tests and by anything that fetches over TFTP."""
    strings = [request.filename, request.mode]
    for name, value in request.options.items():
        strings += [name, value]
    return _OP.pack(request.opcode) + b"".join(s.encode("ascii") + b"\0" for s in strings)
