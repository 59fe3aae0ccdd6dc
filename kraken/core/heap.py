"""CPython's cyclic garbage collector, tuned for servers that keep large heaps."""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000


def tune_gc(young: int = YOUNG_THRESHOLD) -> None:
    """Collect the youngest generation every *young* net allocations instead of CPython's 700.

    Our servers allocate their in-flight objects (parsed messages, events, diffs) in bursts of
    thousands while holding a large heap (100,000 nodes, many subscriptions). At 700 the collector
    runs so often that objects still in flight survive into older generations, and those
    promotions set off full collections that walk the whole heap: kraken-state spent a third of
    its CPU in them converging 100,000 nodes. The older generations keep their thresholds."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young, older, oldest)
