"""Remember who already broke a limit, so each offender is logged once and not once per request.

:class:`OncePerOffender` logs an offender once (until forgotten); :class:`OffenderLog` once per
interval, counting what it did not log in between (for floods that go on).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from twisted.internet.interfaces import IReactorTime


class OncePerOffender:
    """``first(limit, who)`` is true the first time *who* breaks *limit*; memory is bounded.

    At most *capacity* pairs are kept; the oldest is forgotten first (and would be logged again).
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def first(self, limit: str, who: str) -> bool:
        key = (limit, who)
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True


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
