"""Many timeouts behind one reactor timer.

The engine arms a timeout for every step it performs and cancels almost all of them when the
step's result arrives. With one reactor ``DelayedCall`` each, 100,000 nodes in flight keep the
reactor's heap 100,000 deep (every other timer pays for it, in Python-level comparisons) and
cancelled calls linger in it. :class:`Deadlines` keeps them in its own heap of plain tuples
(compared in C) behind a single reactor call set for the earliest one.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger(namespace="kraken.state.deadlines")

# A deadline this close after the reactor call's time still counts as due: the call's time is
# ``now + (when - now)``, which float rounding may put a hair before ``when``.
_SLACK = 1e-9


class Deadline:
    """One armed timeout; :meth:`cancel` before it is due and it never runs."""

    __slots__ = ("args", "called", "cancelled", "fn", "when")

    def __init__(self, when: float, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.when = when
        self.fn = fn
        self.args = args
        self.cancelled = False
        self.called = False

    def active(self) -> bool:
        return not (self.cancelled or self.called)

    def cancel(self) -> None:
        self.cancelled = True


class Deadlines:
    """Deadlines on *clock*, run in deadline order (then in the order they were armed)."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._heap: list[tuple[float, int, Deadline]] = []
        self._seq = itertools.count()
        self._call: IDelayedCall | None = None
        self._call_at = 0.0
        self._pushed = 0  # since the last sweep of cancelled entries

    def __len__(self) -> int:
        return sum(1 for _, _, d in self._heap if d.active())

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> Deadline:
        deadline = Deadline(self.clock.seconds() + delay, fn, args)
        heapq.heappush(self._heap, (deadline.when, next(self._seq), deadline))
        self._pushed += 1
        if self._pushed > max(64, len(self._heap) // 2):  # amortised: cancelled entries never pile up
            self._pushed = 0
            self._heap = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
        self._arm()
        return deadline

    def cancel_all(self) -> None:
        for _, _, deadline in self._heap:
            deadline.cancel()
        self._heap.clear()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _arm(self) -> None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        if not heap:
            return
        when = heap[0][0]
        if self._call is not None and self._call.active():
            if self._call_at <= when:
                return
            self._call.cancel()
        self._call_at = when
        self._call = self.clock.callLater(max(0.0, when - self.clock.seconds()), self._run)

    def _run(self) -> None:
        self._call = None
        due = self.clock.seconds() + _SLACK
        while self._heap and self._heap[0][0] <= due:  # (a callback may arm more, or sweep the heap)
            deadline = heapq.heappop(self._heap)[2]
            if not deadline.cancelled:
                deadline.called = True
                try:
                    deadline.fn(*deadline.args)
                except Exception:
                    log.failure("deadline {fn} raised", fn=getattr(deadline.fn, "__qualname__", deadline.fn))
        self._arm()
