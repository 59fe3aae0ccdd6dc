"""Health of the members of a cluster: active checks (probes on a timer) and a passive filter.

:class:`HealthTable` turns probe results into a verdict per member: a healthy member becomes
unhealthy after ``fails`` consecutive failed probes, an unhealthy one healthy again after
``passes`` consecutive good ones; a member never probed counts as healthy. It does no I/O.
:class:`ActiveHealthCheck` probes every member each ``interval`` seconds on the injected clock
(a probe that has not answered after ``timeout`` seconds failed) and records the results.

:class:`PassiveFilter` is for clients that do not probe: a member whose requests failed
``fails`` times within ``fail_timeout`` seconds is skipped until that window has passed.
:func:`healthy_first` orders members for a client: healthy ones first, each group in the
given (rendezvous) order, so a request still goes somewhere when every member looks down.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger(namespace="kraken.core.health")

Probe = Callable[[str], "Deferred[Any]"]


@dataclass
class _Member:
    healthy: bool = True
    fails: int = 0
    passes: int = 0
    last_error: str = ""


class HealthTable:
    """Consecutive probe results per member, and the verdict they give."""

    def __init__(self, fails: int = 3, passes: int = 2) -> None:
        if fails < 1 or passes < 1:
            raise ValueError("fails and passes must be at least 1")
        self.fails = fails
        self.passes = passes
        self.members: dict[str, _Member] = {}
        self.on_change: list[Callable[[str, bool], None]] = []

    def healthy(self, member: str) -> bool:
        state = self.members.get(member)
        return state is None or state.healthy

    def checked_healthy(self, member: str) -> bool:
        """Probed at least once, and healthy (what readiness asks)."""
        state = self.members.get(member)
        return state is not None and state.healthy and (state.passes > 0 or state.fails < self.fails)

    def unhealthy(self) -> list[str]:
        return sorted(m for m, s in self.members.items() if not s.healthy)

    def forget_others(self, members: Iterable[str]) -> None:
        """Keep only *members* (after a membership change)."""
        keep = set(members)
        for m in list(self.members):
            if m not in keep:
                del self.members[m]

    def record(self, member: str, ok: bool, error: str = "") -> None:
        state = self.members.setdefault(member, _Member())
        if ok:
            state.passes, state.fails, state.last_error = state.passes + 1, 0, ""
            if not state.healthy and state.passes >= self.passes:
                self._flip(member, state, True)
        else:
            state.fails, state.passes, state.last_error = state.fails + 1, 0, error
            if state.healthy and state.fails >= self.fails:
                self._flip(member, state, False)

    def _flip(self, member: str, state: _Member, healthy: bool) -> None:
        state.healthy = healthy
        if healthy:
            log.info("{member} is healthy again", member=member)
        else:
            log.warn("{member} is unhealthy: {n} checks failed, the last: {error}", member=member,
                     n=state.fails, error=state.last_error)
        for callback in self.on_change:
            callback(member, healthy)


class ActiveHealthCheck(Service):
    """Probes every member of *members()* each *interval* seconds and records it in *table*."""

    def __init__(
        self,
        clock: IReactorTime,
        members: Callable[[], Sequence[str]],
        probe: Probe,
        table: HealthTable,
        interval: float = 2.0,
        timeout: float = 2.0,
    ) -> None:
        self.clock = clock
        self.members = members
        self.probe = probe
        self.table = table
        self.interval = interval
        self.timeout = timeout
        self.call: IDelayedCall | None = None
        self.in_flight: set[str] = set()

    def startService(self) -> None:
        super().startService()
        self.call = self.clock.callLater(0, self.check_all)

    def stopService(self) -> Any:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        return super().stopService()

    def check_all(self) -> None:
        members = list(self.members())
        self.table.forget_others(members)
        for member in members:
            if member not in self.in_flight:  # a probe still waiting counts once, at its timeout
                self._check(member)
        if self.running:
            self.call = self.clock.callLater(self.interval, self.check_all)

    def _check(self, member: str) -> None:
        self.in_flight.add(member)
        d = maybeDeferred(self.probe, member)
        d.addTimeout(self.timeout, self.clock)
        d.addCallbacks(lambda _: self.table.record(member, True),
                       lambda f: self.table.record(member, False, f.getErrorMessage()[:200]))
        d.addBoth(lambda _: self.in_flight.discard(member))


@dataclass
class PassiveFilter:
    """Members skipped after ``fails`` failed requests within ``fail_timeout`` seconds."""

    clock: IReactorTime
    fails: int = 1
    fail_timeout: float = 10.0
    failures: dict[str, deque[float]] = field(default_factory=dict)

    def failed(self, member: str) -> None:
        times = self.failures.setdefault(member, deque(maxlen=max(1, self.fails)))
        times.append(self.clock.seconds())

    def succeeded(self, member: str) -> None:
        self.failures.pop(member, None)

    def healthy(self, member: str) -> bool:
        times = self.failures.get(member)
        if not times or len(times) < self.fails or times[-1] - times[0] > self.fail_timeout:
            return True
        if self.clock.seconds() - times[-1] > self.fail_timeout:
            del self.failures[member]
            return True
        return False


def healthy_first(members: Sequence[str], healthy: Callable[[str], bool]) -> list[str]:
    """*members* with the healthy ones first, each group in its given order."""
    good = [m for m in members if healthy(m)]
    return good + [m for m in members if m not in good]
