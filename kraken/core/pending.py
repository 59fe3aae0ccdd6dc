"""Connections that have not yet shown they are clients: a deadline and caps for them.

A connection is *pending* from the moment it is accepted until it proves itself: its TLS
handshake completes (:mod:`kraken.core.tls`) or its HTTP request headers are all in
(:mod:`kraken.core.http`). Until then it costs a file descriptor and nobody knows who it is,
so :class:`PendingConnections` bounds it three ways:

- a **deadline** from admission (not reset by the bytes that arrive): a silent or trickling
  connection is aborted when it passes;
- a cap **per source address** and a cap **per listener**: while a group is over its cap, its
  oldest connections that are *stalled* make room (are aborted).

A connection is *stalled* when it is older than ``grace`` (1 s), no bytes from it wait
unread in its socket, and (TLS) the server has not read a complete ClientHello from it. A
legitimate client sends its first flight right behind the TCP handshake (well within the
grace, even a process opening a thousand connections at once), so it is never stalled, also
in a burst that the server needs seconds of CPU to get through (its bytes wait unread
meanwhile); silent and trickling connections crowding a cap are pushed out a second after
they arrived instead of holding a descriptor until the deadline.
Newcomers are always admitted; an address can only push out its own connections, so one
source cannot push out the clients of others. A group over its cap whose oldest members are
younger than the grace is trimmed when they reach it. (A flood bigger than the open-files
limit can fill it for that long; connections arriving meanwhile are closed by twisted's
EMFILE recovery and must retry.)

Every abort is counted (``kraken_<server>_connections_aborted_total{reason}``) and logged
once per source address and interval (:class:`OffenderLog`).
"""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from prometheus_client import Counter
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from kraken.core.offenders import OffenderLog

log = Logger(namespace="kraken.pending")


@dataclass(frozen=True)
class PendingLimits:
    """How long a connection may stay pending, and how many may at once (0: no cap).

    *grace*: how old a connection must be before a cap may push it out.
    """

    timeout: float
    max_pending: int = 0
    max_per_source: int = 0
    grace: float = 1.0


SCAN_BUDGET = 64  # members of an over-cap group looked at per admission or timer


def _always() -> bool:
    return True


@dataclass
class _Pending:
    source: str
    abort: Callable[[], None]
    timer: IDelayedCall
    since: float
    stalled: Callable[[], bool]


class PendingConnections:
    """The pending connections of one listener (or one HTTP site), under :class:`PendingLimits`.

    *what* names the stage in counters and logs (``tls_handshake``, ``http_headers``): the
    reasons counted are ``<what>_timeout``, ``<what>_per_source`` and ``<what>_full``.
    """

    def __init__(
        self,
        clock: IReactorTime,
        what: str,
        limits: PendingLimits,
        aborted: Counter | None = None,
        offenders: OffenderLog | None = None,
    ) -> None:
        self.clock = clock
        self.what = what
        self.limits = limits
        self.aborted = aborted
        self.offenders = offenders if offenders is not None else OffenderLog(clock)
        self._all: OrderedDict[Hashable, _Pending] = OrderedDict()
        self._by_source: dict[str, OrderedDict[Hashable, None]] = {}
        self._crowded: set[str] = set()  # sources over their cap
        self._trim_call: IDelayedCall | None = None

    def __len__(self) -> int:
        return len(self._all)

    def admit(
        self, key: Hashable, source: str, abort: Callable[[], None], stalled: Callable[[], bool] = _always
    ) -> None:
        """Start *key*'s deadline, then make room under the caps.

        *abort* closes the connection at once; *stalled* says whether it has still made no
        progress (it may only be pushed out by a cap then, and once older than the grace).
        """
        self.done(key)
        now = self.clock.seconds()
        timer = self.clock.callLater(self.limits.timeout, self._abort, key, "timeout")
        self._all[key] = _Pending(source, abort, timer, now, stalled)
        mine = self._by_source.setdefault(source, OrderedDict())
        mine[key] = None
        if self.limits.max_per_source and len(mine) > self.limits.max_per_source:
            self._crowded.add(source)
        self._trim()

    def done(self, key: Hashable) -> bool:
        """*key* proved itself (or closed): it no longer counts and its deadline is off.

        ``False`` when *key* was not pending (never admitted, done already, or aborted here).
        """
        entry = self._remove(key)
        if entry is None:
            return False
        if entry.timer.active():
            entry.timer.cancel()
        return True

    def _remove(self, key: Hashable) -> _Pending | None:
        entry = self._all.pop(key, None)
        if entry is None:
            return None
        mine = self._by_source[entry.source]
        del mine[key]
        if not mine:
            del self._by_source[entry.source]
        if entry.source in self._crowded and len(mine) <= self.limits.max_per_source:
            self._crowded.discard(entry.source)
        return entry

    def _trim_later(self) -> None:
        self._trim_call = None
        self._trim()

    def _trim(self) -> None:
        """Push out stalled connections of every group over its cap; come back for the young ones."""
        wake: float | None = None
        for source in list(self._crowded):
            mine = self._by_source.get(source)
            if mine is not None:
                wake = _earliest(wake, self._make_room(mine, self.limits.max_per_source, "per_source"))
        if self.limits.max_pending and len(self._all) > self.limits.max_pending:
            wake = _earliest(wake, self._make_room(self._all, self.limits.max_pending, "full"))
        if wake is None:
            return
        call = self._trim_call
        if call is not None and call.active() and call.getTime() <= wake:
            return
        if call is not None and call.active():
            call.cancel()
        self._trim_call = self.clock.callLater(max(0.0, wake - self.clock.seconds()), self._trim_later)

    def _make_room(self, group: OrderedDict[Hashable, Any], cap: int, why: str) -> float | None:
        """Abort the oldest stalled members of *group* until it is within *cap*; when it stays
        over, the time to look again (a member turns old enough, or may have stalled since).

        At most :data:`SCAN_BUDGET` members are looked at per call; members making progress move
        to the back of the group's order, so a group of busy legitimate connections over its
        cap (a burst) costs a bounded scan per admission, not one over all of them.
        """
        excess = len(group) - cap
        if excess <= 0:
            return None
        now = self.clock.seconds()
        wake: float | None = None
        for key in list(islice(group, SCAN_BUDGET)):
            if excess <= 0:
                return None
            entry = self._all[key]
            if now - entry.since < self.limits.grace:
                wake = _earliest(wake, entry.since + self.limits.grace)
            elif entry.stalled():
                self._abort(key, why)
                excess -= 1
            else:
                group.move_to_end(key)
        if excess <= 0:
            return None
        return _earliest(wake, now + self.limits.grace)

    def _abort(self, key: Hashable, why: str) -> None:
        entry = self._remove(key)
        if entry is None:
            return
        if entry.timer.active():
            entry.timer.cancel()
        reason = f"{self.what}_{why}"
        if self.aborted is not None:
            self.aborted.labels(reason).inc()
        unlogged = self.offenders.should_log(entry.source)
        if unlogged is not None:
            log.warn(
                "aborted a connection from {source}: {reason} ({explain}); {unlogged} more from it "
                "were not logged in the last interval",
                source=entry.source,
                reason=reason,
                explain=self._explain(why),
                unlogged=unlogged,
            )
        entry.abort()

    def _explain(self, why: str) -> str:
        limits = self.limits
        if why == "timeout":
            return f"{self.what} not complete within {limits.timeout:g}s"
        if why == "per_source":
            return f"over {limits.max_per_source} pending from one address, stalled for {limits.grace:g}s"
        return f"over {limits.max_pending} pending on this listener, stalled for {limits.grace:g}s"


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def socket_of(transport: object) -> socket.socket | None:
    """The socket under *transport* and the protocol wrappers (TLS...) above it, if any."""
    for _ in range(8):
        get_handle = getattr(transport, "getHandle", None)
        handle = get_handle() if get_handle is not None else None
        if isinstance(handle, socket.socket):
            return handle
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None


def unread_bytes(sock: socket.socket | None) -> int:
    """How many received bytes wait in *sock* for the server to read them."""
    if sock is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", raw)[0])


def source_of(address: object) -> str:
    """The host part of a transport's peer address (``unix`` for UNIX sockets)."""
    host = getattr(address, "host", None)
    return str(host) if host is not None else "unix"
