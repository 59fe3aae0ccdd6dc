"""A topic-sharded cluster of kraken-pubsub nodes, without I/O.

Every node accepts any client. Router shards (the ``erlang:phash2`` groups of topics) are
owned by nodes by rendezvous hash (:mod:`kraken.core.hashring`) over the healthy members: the
first healthy node in a shard's ranking owns it, so a dead node's shards move to the next one
and come back when it does.

- A node holds one link (:class:`~kraken.pubsub.upstream.UpstreamLink`, saying ``set peer``)
  to every other member and subscribes there to every topic and pattern its own clients hold;
  a peer's subscriptions are not passed on.
- A record published at a node reaches that node's clients at once, and goes to the other
  nodes from one node, its *deliverer*: the owner of the first shard its publisher (the client
  connection) published to, for as long as that owner is healthy. The publisher's node
  forwards the record there (unless it is the deliverer itself), and the deliverer hands it
  to its clients and to the peers. So every record reaches each node once, all its shards
  together, and one publisher's records stay in order: a subscriber anywhere gets the bytes
  one node would give. (Forwarding each record to the owner of its own shard would spread a
  publisher that spans shards over several paths and lose that order; a publisher usually
  sticks to related topics, so the owners still split the work.)
- What a link receives reaches only the node's own clients.

Replays (``register``, ``retro_subscribe``): topics some client of the node holds come from
its own retained stream (``NOT_FOUND`` unless every link held them the whole window); topics
held by none are subscribed at every peer with a replay of what that peer itself shared with
the cluster (a retained entry knows whether it did), from the peer's position at the
``register`` (``get position`` of a cluster node lists every peer's) or from the time. As
every record is shared by one node, the parts never overlap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any
from weakref import WeakKeyDictionary

from twisted.internet.interfaces import IReactorTime

from kraken.core.hashring import Ring
from kraken.pubsub.router import Pending, Router, Since
from kraken.pubsub.subscriber import Subscriber
from kraken.pubsub.upstream import UpstreamLink


def _resolved(value: bool) -> Pending[bool]:
    done: Pending[bool] = Pending()
    done.resolve(value)
    return done


def _all(waits: list[Pending[bool]]) -> Pending[bool]:
    """True once every one of *waits* is, False as soon as all answered and one is not."""
    done: Pending[bool] = Pending()
    results: list[bool] = []

    def one(found: bool) -> None:
        results.append(found)
        if len(results) == len(waits):
            done.resolve(all(results))

    for wait in waits:
        wait.then(one)
    if not waits:
        done.resolve(True)
    return done


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
        self._sticky: WeakKeyDictionary[Subscriber, str] = WeakKeyDictionary()

    # --- membership --------------------------------------------------------------------------

    def healthy(self, member: str) -> bool:
        if member == self.me:
            return True
        link = self.links[member]
        contact = link.last_contact
        if not link.connected or contact is None:
            return False
        return self.clock.seconds() - contact <= self.health_timeout

    def owner(self, shard: int) -> str:
        for member in self.ranking[shard]:
            if self.healthy(member):
                return member
        return self.me

    def deliverer(self, publisher: Subscriber | None, shard: int) -> str:
        """The node that delivers *publisher*'s records to the peers: the owner of the first
        shard it published to, as long as that node is healthy, so that one publisher's records
        reach every node in order."""
        if publisher is None:
            return self.owner(shard)
        node = self._sticky.get(publisher)
        if node is None or not self.healthy(node):
            node = self._sticky[publisher] = self.owner(shard)
        return node

    def delivers(self, publisher: Subscriber | None, shard: int) -> bool:
        return self.deliverer(publisher, shard) == self.me

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

    def forward(self, record: bytes, publisher: Subscriber | None) -> None:
        """A record published by one of this node's clients: to its deliverer."""
        header = record[8 : record.index(b"\r\n")].split(b" ")[:-1]
        shard = min(map(self.router.shard, header)) if header else 0
        owner = self.deliverer(publisher, shard)
        if owner != self.me:
            self.forwarded += 1
            self.links[owner].forward(record)

    def covers(self, names: Iterable[bytes], seq: int | None, time: float | None, patterns: bool) -> bool:
        names = list(names)
        return all(link.covers(names, seq, time, patterns) for link in self.links.values())

    def replay(self, names: list[bytes], since: Since, patterns: bool) -> Pending[bool]:
        """Subscribe every peer to *names* (held by no client here yet) with a replay of what
        that peer shared since *since*: a Unix time, or the peers' positions from
        :meth:`position`. Found only if every peer could."""
        positions = self._split(since) if isinstance(since, bytes) else {}
        waits: list[Pending[bool]] = []
        for member, link in self.links.items():
            start: Since | None = since if not isinstance(since, bytes) else None
            if member in positions:
                connection, position = positions[member]
                start = position if connection == link.connections else None
            if link.connected and start is not None:
                waits.append(link.replay(names, start, patterns))
            else:
                for name in names:
                    (link.pattern_added if patterns else link.topic_added)(name)
                waits.append(_resolved(False))
        return _all(waits)

    def position(self) -> Pending[bytes | None]:
        """Every peer's position: ``<connection>-<position>`` per member (others than this
        node, in member order), ``0-0`` for one not connected."""
        parts: list[bytes] = []
        done: Pending[bytes | None] = Pending()
        members = [m for m in self.members if m != self.me]
        left = [len(members)]

        def got(index: int, connection: int) -> Callable[[bytes | None], None]:
            def answer(token: bytes | None) -> None:
                parts[index] = b"%d-%s" % (connection, token) if token else b"0-0"
                left[0] -= 1
                if not left[0]:
                    done.resolve(b",".join(parts))

            return answer

        for index, member in enumerate(members):
            parts.append(b"0-0")
            link = self.links[member]
            link.position().then(got(index, link.connections))
        if not members:
            done.resolve(None)
        return done

    def _split(self, token: bytes) -> dict[str, tuple[int, bytes]]:
        members = [m for m in self.members if m != self.me]
        parts = token.split(b",")
        if len(parts) != len(members):
            return {}
        positions = {}
        for member, part in zip(members, parts, strict=True):
            connection, _, position = part.partition(b"-")
            if connection.isdigit() and position and connection != b"0":
                positions[member] = (int(connection), position)
        return positions

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
