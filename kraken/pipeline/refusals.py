"""What the server's limits refused: counted by limit for ``/metrics``
(``kraken_pipeline_refused_total{limit}``) and logged once per offender and limit."""

from __future__ import annotations

from collections import Counter

from twisted.logger import Logger

log = Logger(namespace="kraken.pipeline.limits")

MAX_REMEMBERED = 10_000


class Refusals:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.logged: set[tuple[str, str]] = set()

    def refuse(self, limit: str, offender: str, message: str) -> None:
        """Count a refusal of *limit*; the first one of each (limit, offender) is logged."""
        self.counts[limit] += 1
        key = (limit, offender)
        if key in self.logged:
            return
        if len(self.logged) >= MAX_REMEMBERED:
            self.logged.clear()
        self.logged.add(key)
        log.warn(
            "limit {limit} refused {offender}: {message} (logged once per offender)",
            limit=limit,
            offender=offender,
            message=message,
        )
