"""The retained stream of one router shard, for retroactive subscription.

Every published record that names a topic of the shard is kept as an :class:`Entry`, up to
``capacity`` entries per shard (oldest evicted first). Entries carry the router's global
sequence number, so ``register`` can record an exact position instead of a whole second, and
the shard remembers how far back it is complete, by position and by time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from operator import itemgetter


class Entry(tuple):  # type: ignore[type-arg]
    """One published record as one shard saw it: its topics in that shard, in publish order.

    Built as ``Entry((seq, time, shard, topics, payload, publisher))``: a tuple, because one is
    made for every published record and a tuple is the cheapest object to build.
    """

    __slots__ = ()
    seq: int = property(itemgetter(0))  # type: ignore[assignment]
    time: float = property(itemgetter(1))  # type: ignore[assignment]
    shard: int = property(itemgetter(2))  # type: ignore[assignment]
    topics: tuple[bytes, ...] = property(itemgetter(3))  # type: ignore[assignment]
    payload: bytes = property(itemgetter(4))  # type: ignore[assignment]
    publisher: int = property(itemgetter(5))  # type: ignore[assignment]


class RetainedShard:
    """A bounded FIFO of entries with a per-topic index."""

    def __init__(self, capacity: int, started: float) -> None:
        self.capacity = capacity
        self.entries: deque[Entry] = deque()
        self.by_topic: dict[bytes, deque[Entry]] = {}
        # Everything published after these is still here (or was never published).
        self.complete_after_seq = 0
        self.complete_after_time = started

    def add(self, entry: Entry) -> None:
        if self.capacity <= 0:
            self._forget(entry)
            return
        entries = self.entries
        entries.append(entry)
        by_topic = self.by_topic
        topics = entry[3]
        for topic in topics if len(topics) == 1 else dict.fromkeys(topics):
            queue = by_topic.get(topic)
            if queue is None:
                by_topic[topic] = deque((entry,))
            else:
                queue.append(entry)
        if len(entries) > self.capacity:
            oldest = entries.popleft()
            topics = oldest[3]
            for topic in topics if len(topics) == 1 else dict.fromkeys(topics):
                queue = by_topic[topic]
                queue.popleft()
                if not queue:
                    del by_topic[topic]
            self._forget(oldest)

    def _forget(self, entry: Entry) -> None:
        self.complete_after_seq = entry[0]
        if entry[1] > self.complete_after_time:
            self.complete_after_time = entry[1]

    def newer_than_seq(self, topic: bytes, seq: int) -> Iterator[Entry]:
        for entry in reversed(self.by_topic.get(topic, ())):
            if entry.seq <= seq:
                return
            yield entry

    def newer_than_time(self, topic: bytes, horizon: float) -> Iterator[Entry]:
        for entry in reversed(self.by_topic.get(topic, ())):
            if entry.time <= horizon:
                return
            yield entry

    def __len__(self) -> int:
        return len(self.entries)
