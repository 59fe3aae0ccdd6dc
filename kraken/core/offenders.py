"""Remember who already broke a limit, so each offender is logged once and not once per request."""

from __future__ import annotations

from collections import OrderedDict


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
