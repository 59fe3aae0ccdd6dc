"""What the router delivers to: a connection's subscriptions and its bounded message queue."""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

from twisted.logger import Logger

from kraken.pubsub.patterns import compile_pattern, matches

log = Logger(namespace="kraken.pubsub.queue")

# Ended subscriptions kept per topic for replay de-duplication; older ones fall off.
_HISTORY_PER_TOPIC = 8


class Subscriber:
    """One client of the router (a memcached connection or a WebSocket).

    ``topics`` maps each subscribed topic to the router position at which the subscription
    started; ``ended`` keeps recent ``(since, until)`` spans of former subscriptions, so a
    retroactive replay can skip what this client already received live.
    """

    kind = "subscriber"

    def __init__(self, ident: int, name: str, now: float) -> None:
        self.id = ident
        self.name = name
        self.topics: dict[bytes, int] = {}
        self.ended: dict[bytes, list[tuple[int, int]]] = {}
        # the same two for pattern subscriptions (kraken.pubsub.patterns)
        self.patterns: dict[bytes, int] = {}
        self.ended_patterns: dict[bytes, list[tuple[int, int]]] = {}
        self.horizon: int | None = None  # the position of a pending register
        self.horizon_upstream: bytes | None = None  # on a proxy node: the upstream's then
        self.horizon_generation = 0  # and the upstream connection it belongs to
        self.started = now
        self.last_receive = now
        self.received = 0
        self.dropped = 0
        self.warned_over_limit = False
        # a proxy node's link (``set proxy``): records name every topic of their shard, so the
        # proxy's own replays know them all
        self.full_records = False
        # a cluster peer's link (``set peer``); what it and our own links publish is not
        # forwarded again
        self.peer = False
        self.no_forward = False

    def deliver(self, records: bytes, count: int = 1) -> None:
        """Take *count* serialised records (one chunk, shared with other subscribers)."""
        raise NotImplementedError

    def depth(self) -> int:
        return 0

    def queued_bytes(self) -> int:
        return 0

    def got_live(self, topics: tuple[bytes, ...], seq: int) -> bool:
        """Whether a record at position *seq* naming *topics* reached this client live."""
        for topic in topics:
            since = self.topics.get(topic)
            if since is not None and since < seq:
                return True
            for start, stop in self.ended.get(topic, ()):
                if start < seq <= stop:
                    return True
        if self.patterns or self.ended_patterns:
            return self._got_live_by_pattern(topics, seq)
        return False

    def _got_live_by_pattern(self, topics: tuple[bytes, ...], seq: int) -> bool:
        for pattern, since in self.patterns.items():
            if since < seq and any(matches(compile_pattern(pattern), t) for t in topics):
                return True
        for pattern, spans in self.ended_patterns.items():
            if any(start < seq <= stop for start, stop in spans) and any(
                matches(compile_pattern(pattern), t) for t in topics
            ):
                return True
        return False

    def subscription_ended(self, topic: bytes, since: int, until: int, pattern: bool = False) -> None:
        spans = (self.ended_patterns if pattern else self.ended).setdefault(topic, [])
        spans.append((since, until))
        if len(spans) > _HISTORY_PER_TOPIC:
            del spans[0]

    def forget_history_before(self, seq: int) -> None:
        """Drop spans that ended before *seq*: no retained entry can be that old."""
        for history in (self.ended, self.ended_patterns):
            for topic in [t for t, spans in history.items() if spans[-1][1] < seq]:
                del history[topic]

    def forget_oldest_history(self, keep: int, keep_patterns: int | None = None) -> None:
        """Keep the ended spans of at most *keep* topics (and *keep_patterns* patterns), those
        whose history began last."""
        for ended, limit in ((self.ended, keep), (self.ended_patterns, keep_patterns or keep)):
            excess = len(ended) - limit
            if excess > 0:
                for topic in list(itertools.islice(ended, excess)):
                    del ended[topic]

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind,
            "subscriptions": len(self.topics),
            "patterns": len(self.patterns),
            "length": self.depth(),
            "bytes": self.queued_bytes(),
            "received_message_count": self.received,
            "dropped": self.dropped,
            "time_since_start": now - self.started,
            "time_since_last_receive_messages": now - self.last_receive,
        }


class QueueSubscriber(Subscriber):
    """A memcached client: records wait in a queue until ``get messages`` drains it.

    The queue is bounded by record count and bytes. On overflow the **oldest** records are
    dropped (a polling client wants the freshest data) and counted in ``dropped``. Records that
    arrived together stay together: a chunk (at most ``Router.RUN_RECORDS`` records) is dropped
    whole.
    """

    kind = "memcached"

    def __init__(self, ident: int, name: str, now: float, max_messages: int, max_bytes: int) -> None:
        super().__init__(ident, name, now)
        self.queue: deque[bytes] = deque()
        self.counts: deque[int] = deque()
        self.records = 0
        self.size = 0
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.overflowing = False

    def deliver(self, records: bytes, count: int = 1) -> None:
        self.queue.append(records)
        self.counts.append(count)
        self.size += len(records)
        self.records += count
        self.received += count
        if self.size > self.max_bytes or self.records > self.max_messages:
            self._overflow()

    def _overflow(self) -> None:
        queue = self.queue
        counts = self.counts
        while queue and (self.size > self.max_bytes or self.records > self.max_messages):
            self.size -= len(queue.popleft())
            dropped = counts.popleft()
            self.records -= dropped
            self.dropped += dropped
        if not self.overflowing:
            self.overflowing = True
            log.warn(
                "queue of {name} is full ({limit} messages / {bytes} bytes): dropping its oldest messages",
                name=self.name,
                limit=self.max_messages,
                bytes=self.max_bytes,
            )

    def drain(self, now: float) -> bytes:
        """Everything queued, oldest first, as one block of records; the queue is emptied."""
        self.last_receive = now
        self.overflowing = False
        if not self.queue:
            return b""
        block = b"".join(self.queue)
        self._clear()
        return block

    def drain_reply(self, now: float) -> bytes:
        """The whole ``get messages`` reply, built with a single copy of the queued records."""
        self.last_receive = now
        self.overflowing = False
        if not self.queue:
            return b"END\r\n"
        queue = self.queue
        queue.appendleft(b"VALUE messages 0 %d\r\n" % (self.size - 2))
        queue.append(b"END\r\n")
        reply = b"".join(queue)
        self._clear()
        return reply

    def _clear(self) -> None:
        self.queue.clear()
        self.counts.clear()
        self.size = 0
        self.records = 0

    def depth(self) -> int:
        return self.records

    def queued_bytes(self) -> int:
        return self.size
