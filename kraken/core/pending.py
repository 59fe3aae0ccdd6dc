"""Connections that have not yet shown they are clients: a deadline and caps for them.

A connection is *pending* from the moment it is accepted until it proves itself: its TLS
handshake completes (:mod:`kraken.core.tls`) or its HTTP request headers are all in
(:mod:`kraken.core.http`). Until then it costs a file descriptor and nobody knows who it is,
so :class:`PendingConnections` bounds it three ways:

- a **deadline** from admission (not reset by the bytes that arrive): a silent or trickling
  connection is aborted when it passes;
- a cap **per source address**: a newcomer from an address already holding that many pending
  connections makes room by aborting that address's *oldest* one;
- a cap **per listener**: when full, a newcomer aborts the oldest pending connection overall.

Evicting the oldest rather than refusing the newest is what keeps a legitimate client served
while an attacker holds the caps: a real handshake or header block takes milliseconds, so the
newcomer completes long before the attacker's next connections push it out, while each of
the attacker's connections lives only until it is the oldest. An address can only ever evict
its own connections, so one source cannot push out the clients of others; only many sources
together reach the listener cap.

Every abort is counted (``kraken_<server>_connections_aborted_total{reason}``) and logged
once per source address and interval (:class:`OffenderLog`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from prometheus_client import Counter
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger(namespace="kraken.pending")


@dataclass(frozen=True)
class PendingLimits:
    """How long a connection may stay pending, and how many may at once (0: no cap)."""

    timeout: float
    max_pending: int = 0
    max_per_source: int = 0


class OffenderLog:
    """Log a refusal once per offender and interval; later ones in the interval are counted only.

    At most *max_offenders* offenders are remembered (the least recent are forgotten first).
    """

    def __init__(self, clock: IReactorTime, interval: float = 60.0, max_offenders: int = 10_000) -> None:
        self.clock = clock
        self.interval = interval
        self.max_offenders = max_offenders
        self._last: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()

    def should_log(self, offender: Hashable) -> int | None:
        """``None`` when *offender* was logged within the interval, else how many were not logged."""
        now = self.clock.seconds()
        seen = self._last.get(offender)
        if seen is not None and now - seen[0] < self.interval:
            self._last[offender] = (seen[0], seen[1] + 1)
            return None
        self._last.pop(offender, None)
        self._last[offender] = (now, 0)
        while len(self._last) > self.max_offenders:
            self._last.popitem(last=False)
        return seen[1] if seen is not None else 0


@dataclass
class _Pending:
    source: str
    abort: Callable[[], None]
    timer: IDelayedCall


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

    def __len__(self) -> int:
        return len(self._all)

    def admit(self, key: Hashable, source: str, abort: Callable[[], None]) -> None:
        """Start *key*'s deadline; make room under the caps first. *abort* closes it at once."""
        self.done(key)
        limits = self.limits
        mine = self._by_source.get(source)
        if mine is not None and limits.max_per_source and len(mine) >= limits.max_per_source:
            self._abort(next(iter(mine)), "per_source")
        if limits.max_pending and len(self._all) >= limits.max_pending:
            self._abort(next(iter(self._all)), "full")
        timer = self.clock.callLater(limits.timeout, self._abort, key, "timeout")
        self._all[key] = _Pending(source, abort, timer)
        self._by_source.setdefault(source, OrderedDict())[key] = None

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
        return entry

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
            return f"over {limits.max_per_source} pending from one address; the oldest made room"
        return f"over {limits.max_pending} pending on this listener; the oldest made room"


def source_of(address: object) -> str:
    """The host part of a transport's peer address (``unix`` for UNIX sockets)."""
    host = getattr(address, "host", None)
    return str(host) if host is not None else "unix"
