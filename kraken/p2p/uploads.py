"""How many pieces one host streams at once, over all its connections and blobs.

A seeder that streams to every requester at once splits its link between them: with 20
requesters each piece takes 20 times as long to arrive, and while it travels nobody can pass
it on (at low rates the wait can even outlast the requesters' timeouts). Streaming a few pieces
at a time at full speed hands each one over as early as possible, so the swarm spreads it
sooner. Origins do this by default; agents, whose requesters are spread over the swarm, do not.

A slow receiver must not stall the others: a piece that has held its slot for ``overdue``
seconds stops counting against the limit, and the next sender in line starts.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from twisted.internet.interfaces import IReactorTime


class Sender(Protocol):
    def slot_granted(self) -> None: ...


class UploadSlots:
    """At most ``limit`` senders stream at once (0: no limit); the others wait in arrival order."""

    def __init__(self, limit: int, clock: IReactorTime, overdue: float = 2.0) -> None:
        self.limit = limit
        self.clock = clock
        self.overdue = overdue
        self.holders: dict[Sender, float] = {}  # sender -> when it got its slot
        self.waiting: deque[Sender] = deque()

    def acquire(self, sender: Sender) -> bool:
        """True if *sender* may stream now; otherwise it is queued and told by ``slot_granted``."""
        if not self.limit or sender in self.holders:
            return True
        if not self.waiting and self._busy() < self.limit:
            self.holders[sender] = self.clock.seconds()
            return True
        if sender not in self.waiting:
            self.waiting.append(sender)
        return False

    def release(self, sender: Sender) -> None:
        """*sender* finished its piece, or went away: the next in line may start."""
        if self.holders.pop(sender, None) is None and sender in self.waiting:
            self.waiting.remove(sender)
            return
        self.grant()

    def grant(self) -> None:
        """Start waiting senders while slots are free (called on release and on every tick)."""
        while self.waiting and self._busy() < self.limit:
            sender = self.waiting.popleft()
            self.holders[sender] = self.clock.seconds()
            sender.slot_granted()

    def _busy(self) -> int:
        now = self.clock.seconds()
        return sum(1 for since in self.holders.values() if now - since < self.overdue)
