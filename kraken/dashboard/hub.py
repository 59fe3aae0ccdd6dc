"""The hub: polls each page's adapter while someone watches it and pushes every new snapshot
to the browsers watching that page. Health is always polled, so its sparklines have a history.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger(namespace="kraken.dashboard.hub")
ALWAYS = ("health",)


class Adapter(Protocol):
    def collect(self) -> Deferred[dict[str, Any]]: ...


Watcher = Callable[[str, dict[str, Any], float], None]


class Hub:
    def __init__(self, clock: IReactorTime, adapters: dict[str, Adapter], interval: float) -> None:
        self.clock = clock
        self.adapters = adapters
        self.interval = interval
        self.watchers: dict[str, set[Watcher]] = {name: set() for name in adapters}
        self.latest: dict[str, tuple[dict[str, Any], float]] = {}
        self.busy: set[str] = set()
        self.loop = LoopingCall(self.tick)
        self.loop.clock = clock

    def start(self) -> None:
        self.loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()

    def watch(self, page: str, watcher: Watcher) -> None:
        self.watchers[page].add(watcher)
        if page in self.latest:
            data, at = self.latest[page]
            watcher(page, data, at)
        self.poll(page)

    def unwatch(self, watcher: Watcher) -> None:
        for group in self.watchers.values():
            group.discard(watcher)

    def tick(self) -> None:
        for page in self.adapters:
            if page in ALWAYS or self.watchers[page]:
                self.poll(page)

    def poll(self, page: str) -> None:
        if page in self.busy:  # the previous poll is still out: slow servers do not pile up polls
            return
        self.busy.add(page)

        def done(data: dict[str, Any]) -> None:
            at = self.clock.seconds()
            self.latest[page] = (data, at)
            for watcher in list(self.watchers[page]):
                watcher(page, data, at)

        def failed(failure: Any) -> None:
            log.failure("collecting the {page} page failed", failure, page=page)

        d = maybeDeferred(self.adapters[page].collect)
        d.addCallbacks(done, failed)
        d.addBoth(lambda _: self.busy.discard(page))
