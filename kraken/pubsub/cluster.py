"""A topic-sharded cluster of kraken-pubsub nodes, without I/O.

Every node accepts any client. Router shards (the ``erlang:phash2`` groups of topics) are
owned by nodes by rendezvous hash (:mod:`kraken.core.hashring`) over the healthy members: the
first healthy node in a shard's ranking owns it, so a dead node's shards move to the next one
and come back when it does.

- A node holds one link (:class:`~kraken.pubsub.upstream.UpstreamLink`, saying ``set peer``)
  to every other member and subscribes there to every topic and pattern its own clients hold;
  a peer's subscriptions are not passed on.
- A record published at a node reaches that node's clients at once. If the node owns the
  record's first shard it also delivers it to the peers' links; otherwise it forwards the
  record to the owner, which delivers it to its clients and to the other peers. So every
  record crosses to each node once, from one node, all its shards together: a subscriber
  anywhere gets the bytes one node would give.
- What a link receives reaches only the node's own clients.

Replays (``register``, ``retro_subscribe``) are answered from the node's own retained stream
when every link held the topics for the whole window, else ``NOT_FOUND``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet.interfaces import IReactorTime

from kraken.core.hashring import Ring
from kraken.pubsub.router import Pending, Router, Since
from kraken.pubsub.upstream import UpstreamLink


class Cluster:
    def __init__(
        self,
        router: Router,
        clock: IReactorTime,
        me: str,
        members: Sequence[str],
        poll_interval: float = 0.01,
        max_pending_bytes: int = 64 * 1024 * 1024,
        health_timeout: float = 3.0,
    ) -> None:
        if me not in members:
            raise ValueError(f"this node {me!r} is not one of the members {list(members)}")
        self.router = router
        self.clock = clock
        self.me = me
        self.members = sorted(set(members))
        self.health_timeout = health_timeout
        self.links = {
            m: UpstreamLink(router, clock, poll_interval, max_pending_bytes, hello=b"peer")
            for m in self.members
            if m != me
        }
        ring = Ring(self.members, max_replica=len(self.members))
        self.ranking = [ring.ranked(f"shard-{shard}") for shard in range(router.shards)]
        self.forwarded = 0

    # --- membership --------------------------------------------------------------------------

    def healthy(self, member: str) -> bool:
        if member == self.me:
            return True
        link = self.links[member]
        contact = link.last_contact
        return link.connected and contact is not None and self.clock.seconds() - contact <= self.health_timeout

    def owner(self, shard: int) -> str:
        for member in self.ranking[shard]:
            if self.healthy(member):
                return member
        return self.me

    def owns(self, shard: int) -> bool:
        return self.owner(shard) == self.me

    def owned_shards(self) -> dict[str, list[int]]:
        owned: dict[str, list[int]] = {m: [] for m in self.members}
        for shard in range(self.router.shards):
            owned[self.owner(shard)].append(shard)
        return owned

    def ping(self) -> None:
        """Ask every connected peer for its position: the answer is the health check."""
        for link in self.links.values():
            if link.connected:
                link.position()

    # --- from the local router ---------------------------------------------------------------

    def topic_added(self, topic: bytes) -> None:
        for link in self.links.values():
            link.topic_added(topic)

    def topic_removed(self, topic: bytes) -> None:
        for link in self.links.values():
            link.topic_removed(topic)

    def pattern_added(self, pattern: bytes) -> None:
        for link in self.links.values():
            link.pattern_added(pattern)

    def pattern_removed(self, pattern: bytes) -> None:
        for link in self.links.values():
            link.pattern_removed(pattern)

    def forward(self, record: bytes) -> None:
        """A record published by one of this node's clients: to the owner of its first shard."""
        header = record[8 : record.index(b"\r\n")].split(b" ")[:-1]
        shard = min(map(self.router.shard, header)) if header else 0
        owner = self.owner(shard)
        if owner != self.me:
            self.forwarded += 1
            self.links[owner].forward(record)

    def covers(self, names: Iterable[bytes], seq: int | None, time: float | None, patterns: bool) -> bool:
        names = list(names)
        return all(link.covers(names, seq, time, patterns) for link in self.links.values())

    def replay(self, names: list[bytes], since: Since, patterns: bool) -> Pending[bool]:
        """No replay across nodes: subscribe everywhere, answer NOT_FOUND."""
        for name in names:
            (self.pattern_added if patterns else self.topic_added)(name)
        done: Pending[bool] = Pending()
        done.resolve(False)
        return done

    def position(self) -> Pending[bytes | None]:
        done: Pending[bytes | None] = Pending()
        done.resolve(None)
        return done

    @property
    def connections(self) -> int:
        return 0

    # --- inspection --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        owned = self.owned_shards()
        return {
            "self": self.me,
            "forwarded": self.forwarded,
            "members": [
                {
                    "node": m,
                    "self": m == self.me,
                    "healthy": self.healthy(m),
                    "owned_shards": owned[m],
                    "link": self.links[m].status() if m in self.links else None,
                }
                for m in self.members
            ],
        }
