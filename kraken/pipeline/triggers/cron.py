"""A cron schedule (five fields, UTC, via cronsim) injecting an event at each time.

The event is the trigger's ``event`` plus ``scheduled_at`` (ISO 8601, UTC), so a durable
pipeline keyed on it runs each time once. Times missed while the server was down are not
run afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cronsim import CronSim
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger(namespace="kraken.pipeline.triggers.cron")


class CronSource:
    def __init__(
        self, name: str, schedule: str, event: dict[str, Any], fire: Callable[[list[Any]], Any],
        clock: IReactorTime,
    ) -> None:
        self.name = name
        self.schedule = schedule
        self.event = event
        self.fire = fire
        self.clock = clock
        self.call: IDelayedCall | None = None
        self.next_at: float | None = None
        self.fired = 0

    def start(self) -> None:
        now = self.clock.seconds()
        at = next(CronSim(self.schedule, datetime.fromtimestamp(now, UTC))).timestamp()
        self.next_at = at
        self.call = self.clock.callLater(max(0.0, at - now), self._fire, at)

    def _fire(self, at: float) -> None:
        self.fired += 1
        event = {**self.event, "scheduled_at": datetime.fromtimestamp(at, UTC).isoformat()}
        try:
            self.fire([event])
        except Exception as e:
            log.error("cron trigger {name}: {e}", name=self.name, e=e)
        self.start()

    def stop(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None

    def status(self) -> dict[str, Any]:
        return {"next_at": self.next_at, "fired": self.fired}
