"""A twistd service that starts and stops a :class:`~kraken.p2p.scheduler.Scheduler`."""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred

from kraken.p2p.scheduler import Scheduler


class SchedulerService(Service):
    def __init__(
        self, scheduler: Scheduler, on_stop: Callable[[], Deferred[None] | None] | None = None
    ) -> None:
        self.scheduler = scheduler
        self.on_stop = on_stop

    def startService(self) -> None:
        super().startService()
        self.scheduler.start()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self.scheduler.stop()
        if self.on_stop is not None:
            return self.on_stop()
        return None
