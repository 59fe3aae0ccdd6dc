"""The retained stream of one router shard, for retroactive subscription.

Every published record that names a topic of the shard is kept as an :class:`Entry`, up to
``capacity`` entries per shard (oldest evicted first). Entries carry the router's global
sequence number, so ``register`` can record an exact position instead of a whole second, and
the shard remembers how far back it is complete, by position and by time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Final

# One published record as one shard saw it: ``(seq, time, shard, topics, payload, publisher,
# shared)`` — its topics in that shard in publish order; ``shared``: this node delivered it to
# its cluster's peers (always true outside a cluster), so it may replay it to them. A plain
# tuple, read by the indexes below: one is made for every published record, and a tuple is
# the cheapest object to build.
Entry = tuple[int, float, int, tuple[bytes, ...], bytes, int, bool]
SEQ: Final = 0
TIME: Final = 1
SHARD: Final = 2
TOPICS: Final = 3
PAYLOAD: Final = 4
PUBLISHER: Final = 5
SHARED: Final = 6


class RetainedShard:
    """A bounded FIFO of entries, oldest evicted first.

    Adding is what every publish pays, so it is a bare append; finding a topic's entries is a
    scan from the newest back to the horizon, paid only by a retroactive subscribe.
    """

    def __init__(self, capacity: int, started: float) -> None:
        self.capacity = capacity
        self.entries: deque[Entry] = deque(maxlen=max(capacity, 1))
        # Everything published after these is still here (or was never published).
        self.complete_after_seq = 0
        self.complete_after_time = started

    def add(self, entry: Entry) -> None:
        entries = self.entries
        if self.capacity <= 0:
            self._forget(entry)
            return
        if len(entries) == self.capacity:
            self._forget(entries[0])  # the append below evicts it
        entries.append(entry)

    def extend(self, new: list[Entry]) -> None:
        """:meth:`add` each of *new* (newer than every entry here), in one go."""
        entries = self.entries
        if self.capacity <= 0:
            for entry in new:
                self._forget(entry)
            return
        evicted = len(entries) + len(new) - self.capacity
        if evicted > 0:  # the last one evicted marks where the shard is complete from
            self._forget(entries[evicted - 1] if evicted <= len(entries) else new[evicted - len(entries) - 1])
        entries.extend(new)

    def _forget(self, entry: Entry) -> None:
        self.complete_after_seq = entry[SEQ]
        if entry[TIME] > self.complete_after_time:
            self.complete_after_time = entry[TIME]

    def newer_than_seq(self, wanted: Callable[[bytes], bool], seq: int) -> Iterator[Entry]:
        """Entries naming a *wanted* topic published after position *seq*, newest first."""
        for entry in reversed(self.entries):
            if entry[SEQ] <= seq:
                return
            if any(map(wanted, entry[TOPICS])):
                yield entry

    def newer_than_time(self, wanted: Callable[[bytes], bool], horizon: float) -> Iterator[Entry]:
        """Entries naming a *wanted* topic published after Unix time *horizon*, newest first."""
        for entry in reversed(self.entries):
            if entry[TIME] <= horizon:
                return
            if any(map(wanted, entry[TOPICS])):
                yield entry

    def __len__(self) -> int:
        return len(self.entries)
