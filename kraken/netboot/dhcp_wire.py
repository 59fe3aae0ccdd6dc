"""DHCP/BOOTP messages (RFC 2131, options RFC 2132), sans-IO.

Our own codec rather than dpkt's: dpkt 1.9.8 cannot encode its own default DHCP message on
Python 3 (a ``str`` option default), and on malformed datagrams its decoder raises assorted
exceptions (``struct.error``, ``IndexError``, ``NeedData``). Here every malformed datagram is one
:class:`WireError`, which the fuzz tests hold it to. Repeated options are concatenated
(RFC 3396); option overloading of ``sname``/``file`` is not honoured (boot clients do not use it).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from enum import IntEnum

from kraken.core import wire

MAGIC = b"\x63\x82\x53\x63"
MIN_MESSAGE = 300  # what BOOTP relays and old PXE ROMs expect at least
_FIXED = struct.Struct(">BBBBIHH4s4s4s4s16s64s128s")
BOOTREQUEST = 1
BOOTREPLY = 2
BROADCAST_FLAG = 0x8000


class Option(IntEnum):
    PAD = 0
    SUBNET_MASK = 1
    ROUTER = 3
    DNS = 6
    HOSTNAME = 12
    REQUESTED_IP = 50
    LEASE_TIME = 51
    MESSAGE_TYPE = 53
    SERVER_ID = 54
    PARAMETER_REQUEST = 55
    MESSAGE = 56
    VENDOR_CLASS = 60
    CLIENT_ID = 61
    TFTP_SERVER = 66
    BOOTFILE = 67
    USER_CLASS = 77
    CLIENT_ARCH = 93
    END = 255


class MessageType(IntEnum):
    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


class WireError(wire.WireError):
    """A datagram that is not a DHCP message."""


ZERO_IP = "0.0.0.0"


@dataclass
class Message:
    op: int
    xid: int
    chaddr: bytes  # the client hardware address, hlen bytes
    htype: int = 1
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: str = ZERO_IP
    yiaddr: str = ZERO_IP
    siaddr: str = ZERO_IP
    giaddr: str = ZERO_IP
    sname: str = ""
    file: str = ""
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def mac(self) -> str:
        return ":".join(f"{b:02x}" for b in self.chaddr)

    @property
    def message_type(self) -> MessageType | None:
        value = self.options.get(Option.MESSAGE_TYPE)
        if value is None or len(value) != 1 or value[0] not in MessageType._value2member_map_:
            return None
        return MessageType(value[0])

    def ip_option(self, option: Option) -> str | None:
        value = self.options.get(option)
        return str(ipaddress.IPv4Address(value)) if value is not None and len(value) == 4 else None


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def _options(body: bytes) -> dict[int, bytes]:
    options: dict[int, bytes] = {}
    i = 0
    while i < len(body):
        code = body[i]
        if code == Option.END:
            return options
        if code == Option.PAD:
            i += 1
            continue
        if i + 1 >= len(body) or i + 2 + body[i + 1] > len(body):
            raise WireError(f"option {code} runs past the end of the message")
        length = body[i + 1]
        options[code] = options.get(code, b"") + body[i + 2 : i + 2 + length]
        i += 2 + length
    raise WireError("options have no END")


def decode(datagram: bytes) -> Message:
    if len(datagram) < _FIXED.size + len(MAGIC):
        raise WireError(f"{len(datagram)} bytes is shorter than a DHCP message")
    fields = _FIXED.unpack_from(datagram)
    op, htype, hlen, hops, xid, secs, flags, ci, yi, si, gi, chaddr, sname, file = fields
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise WireError(f"unknown BOOTP op {op}")
    if not 1 <= hlen <= 16:
        raise WireError(f"hardware address length {hlen} is out of range")
    if datagram[_FIXED.size : _FIXED.size + 4] != MAGIC:
        raise WireError("no DHCP magic cookie")
    ciaddr, yiaddr, siaddr, giaddr = (str(ipaddress.IPv4Address(raw)) for raw in (ci, yi, si, gi))
    return Message(
        op, xid, chaddr[:hlen], htype=htype, hops=hops, secs=secs, flags=flags,
        ciaddr=ciaddr, yiaddr=yiaddr, siaddr=siaddr, giaddr=giaddr,
        sname=_text(sname), file=_text(file), options=_options(datagram[_FIXED.size + 4 :]),
    )  # fmt: skip


def _pack_option(code: int, value: bytes) -> bytes:
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [b""]
    return b"".join(bytes((code, len(c))) + c for c in chunks)


def encode(message: Message) -> bytes:
    fixed = _FIXED.pack(
        message.op, message.htype, len(message.chaddr), message.hops, message.xid, message.secs,
        message.flags, *(ipaddress.IPv4Address(a).packed for a in
                         (message.ciaddr, message.yiaddr, message.siaddr, message.giaddr)),
        message.chaddr, message.sname.encode("ascii"), message.file.encode("ascii"),
    )  # fmt: skip
    options = b"".join(_pack_option(code, value) for code, value in message.options.items())
    out = fixed + MAGIC + options + bytes((Option.END,))
    return out.ljust(MIN_MESSAGE, b"\0")
