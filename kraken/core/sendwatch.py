"""Whether a connection's peer is still taking the bytes we owe it.

A server that answers a slow reader has handed most of a long response to its buffers (the
transport's, then the kernel's socket buffer, megabytes of it) well before the client has it.
Timeouts measured from our last write cut such a reader although it makes progress; having no
timeout at all lets a reader that stopped reading hold the connection forever.
:class:`SendWatch` measures what the peer actually takes: the bytes its TCP stack acknowledged
(``TCP_INFO``) and the transport taking writes again after it was full. It calls ``on_stall``
when neither moved for ``timeout`` seconds, and tells its owner when every byte is delivered
(nothing queued in the socket), which is when a keep-alive connection starts to wait for the
next request.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime

# Linux's struct tcp_info holds tcpi_bytes_acked (u64) at this offset (since Linux 4.1).
_BYTES_ACKED_OFFSET = 120
_TCP_INFO_SIZE = 128


@dataclass(frozen=True)
class SendState:
    """*queued*: bytes in the socket the peer has not acknowledged yet; *acked*: bytes it has
    acknowledged since the connection began (``None`` where the system does not say)."""

    queued: int
    acked: int | None


def send_state(sock: socket.socket | None) -> SendState | None:
    """The send side of *sock*, or ``None`` without a socket (or one the system cannot describe)."""
    if sock is None:
        return None
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):  # closed meanwhile
        return None
    queued = int(struct.unpack("i", raw)[0])
    acked = None
    tcp_info = getattr(socket, "TCP_INFO", None)
    if tcp_info is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, tcp_info, _TCP_INFO_SIZE)
        except OSError:
            info = b""
        if len(info) >= _BYTES_ACKED_OFFSET + 8:
            acked = int(struct.unpack_from("=Q", info, _BYTES_ACKED_OFFSET)[0])
    return SendState(queued, acked)


class SendWatch:
    """Watches one connection while it owes its peer bytes.

    The owner reports the transport's flow control (``blocked`` when it can take no more,
    ``unblocked`` when it drained) and may ask to be told once everything is delivered
    (``when_delivered``). While either is pending, every *interval* seconds the watch reads
    *probe*: bytes acknowledged since the last look are progress, and so is ``unblocked``;
    each progress calls *on_progress*. With no progress for *timeout* seconds it calls
    *on_stall* (the owner aborts the connection) and stops. Once the transport is not blocked
    and the socket holds nothing unacknowledged, it stops and calls the ``when_delivered``
    callback. A *probe* answering ``None`` (no socket) leaves the transport's flow control as
    the only measure.
    """

    def __init__(
        self,
        clock: IReactorTime,
        probe: Callable[[], SendState | None],
        timeout: float,
        on_stall: Callable[[], None],
        on_progress: Callable[[], None] = lambda: None,
        interval: float | None = None,
    ) -> None:
        self.clock = clock
        self.probe = probe
        self.timeout = timeout
        self.on_stall = on_stall
        self.on_progress = on_progress
        self.interval = interval if interval is not None else min(1.0, timeout / 4)
        self.is_blocked = False
        self._acked: int | None = None
        self._last_progress = 0.0
        self._call: IDelayedCall | None = None
        self._delivered: Callable[[], None] | None = None

    @property
    def watching(self) -> bool:
        return self._call is not None

    def blocked(self) -> None:
        """The transport's buffer is full: what we owe waits for the peer."""
        self.is_blocked = True
        self._start()

    def unblocked(self) -> None:
        """The transport drained its buffer into the socket: the peer took bytes."""
        self.is_blocked = False
        if self.watching:
            self._progress()
            then = self._delivered
            if then is not None and self._delivered_now(self.probe()):
                self.stop()
                then()

    def when_delivered(self, then: Callable[[], None]) -> None:
        """Call *then* once the peer has every byte written so far (at once if it has)."""
        if self._delivered_now(self.probe()):
            then()
            return
        self._delivered = then
        self._start()

    def forget_delivered(self) -> None:
        """Drop the ``when_delivered`` callback (the stall watch goes on while bytes are owed)."""
        self._delivered = None

    def stop(self) -> None:
        self._delivered = None
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _delivered_now(self, state: SendState | None) -> bool:
        return not self.is_blocked and (state is None or state.queued == 0)

    def _start(self) -> None:
        if self._call is not None:
            return
        state = self.probe()
        self._acked = state.acked if state is not None else None
        self._last_progress = self.clock.seconds()
        self._call = self.clock.callLater(self.interval, self._tick)

    def _progress(self) -> None:
        self._last_progress = self.clock.seconds()
        self.on_progress()

    def _tick(self) -> None:
        self._call = None
        state = self.probe()
        acked = state.acked if state is not None else None
        if acked is not None and acked != self._acked:
            self._acked = acked
            self._progress()
        if self._delivered_now(state):
            then, self._delivered = self._delivered, None
            if then is not None:
                then()
            return
        if self.clock.seconds() - self._last_progress >= self.timeout:
            self._delivered = None
            self.on_stall()
            return
        self._call = self.clock.callLater(self.interval, self._tick)
