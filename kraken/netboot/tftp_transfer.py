"""One TFTP read transfer as a state machine, sans-IO: packets in, datagrams out.

The adapter feeds it acknowledgements and timer expiries and sends what it returns. Options
(``blksize``, ``tsize``, ``timeout``) are negotiated as RFC 2347-2349 describe; a duplicate ACK
never causes a retransmission (the "Sorcerer's Apprentice" bug), only a timeout does. Block
numbers roll over past 65535, so files larger than 32 MiB at the default block size still go.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from kraken.netboot import tftp_wire
from kraken.netboot.tftp_wire import ErrorCode

DEFAULT_BLKSIZE = 512
MIN_BLKSIZE = 8
MAX_BLKSIZE = 65464
DEFAULT_TIMEOUT = 1.0
MAX_RETRIES = 5


class FileSource(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class BytesSource:
    """A file made in memory (a rendered iPXE script)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]

    def close(self) -> None:
        pass


class DiskSource:
    """A file under the boot root, read with ``pread`` one block at a time."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def close(self) -> None:
        os.close(self.fd)


@dataclass(frozen=True)
class Step:
    """What the adapter does next: send ``datagrams``, then, unless ``done``, wait ``timeout`` s."""

    datagrams: tuple[bytes, ...]
    done: bool = False


def _int_option(options: dict[str, str], name: str) -> int | None:
    text = options.get(name)
    return int(text) if text is not None and text.isascii() and text.isdigit() and len(text) < 8 else None


class ReadTransfer:
    def __init__(self, source: FileSource, options: dict[str, str], max_blksize: int = MAX_BLKSIZE) -> None:
        self.source = source
        self.blksize = DEFAULT_BLKSIZE
        self.timeout = DEFAULT_TIMEOUT
        self.accepted: dict[str, str] = {}
        blksize = _int_option(options, "blksize")
        if blksize is not None and blksize >= MIN_BLKSIZE:
            self.blksize = min(blksize, max_blksize, MAX_BLKSIZE)
            self.accepted["blksize"] = str(self.blksize)
        if "tsize" in options:
            self.accepted["tsize"] = str(source.size)
        timeout = _int_option(options, "timeout")
        if timeout is not None and 1 <= timeout <= 255:
            self.timeout = float(timeout)
            self.accepted["timeout"] = str(timeout)
        self.block = 0  # the block the peer must acknowledge next (0 = the OACK)
        self.last_sent = b""
        self.retries = 0
        self.finished = False
        self.complete = False

    @property
    def blocks(self) -> int:
        """How many DATA blocks the file takes (a final short or empty block always ends it)."""
        return self.source.size // self.blksize + 1

    def start(self) -> Step:
        if self.accepted:
            return self._send(tftp_wire.encode_oack(self.accepted))
        return self._next_data()

    def _send(self, datagram: bytes) -> Step:
        self.last_sent = datagram
        self.retries = 0
        return Step((datagram,))

    def _next_data(self) -> Step:
        self.block += 1
        offset = (self.block - 1) * self.blksize
        payload = self.source.read(offset, self.blksize) if offset < self.source.size else b""
        return self._send(tftp_wire.encode_data(self.block, payload))

    def receive(self, datagram: bytes) -> Step:
        if self.finished:
            return Step((), done=True)
        try:
            packet = tftp_wire.decode(datagram)
        except tftp_wire.WireError as e:
            return self._abort(ErrorCode.ILLEGAL_OPERATION, e.reason)
        if isinstance(packet, tftp_wire.Error):
            self.finished = True
            return Step((), done=True)
        if not isinstance(packet, tftp_wire.Ack):
            return self._abort(ErrorCode.ILLEGAL_OPERATION, "a read transfer takes only ACKs")
        if packet.block != self.block & 0xFFFF:
            return Step(())  # a duplicate or stale ACK: wait for the timer
        if self.block >= self.blocks:
            self.finished = self.complete = True
            return Step((), done=True)
        return self._next_data()

    def expire(self) -> Step:
        """The timer ran out without the expected ACK: resend, or give up after MAX_RETRIES."""
        if self.finished:
            return Step((), done=True)
        self.retries += 1
        if self.retries > MAX_RETRIES:
            self.finished = True
            return Step((), done=True)
        return Step((self.last_sent,))

    def _abort(self, code: ErrorCode, message: str) -> Step:
        self.finished = True
        return Step((tftp_wire.encode_error(code, message),), done=True)
