"""Which origins own a digest, and copying a new blob to the other owners.

An origin cluster places each digest on ``max_replica`` origins by rendezvous hashing over the
configured ``cluster`` addresses (this origin alone when the list is empty). A blob uploaded to
one owner is copied to every other owner: one task ``<digest hex>><owner>`` each in the
``replication`` queue of the origin's journal (:mod:`kraken.core.journal`), committed before
the upload is acknowledged, retried with capped exponential backoff until the copy lands (an
owner that has it already answers ``409``, which counts as done), and resumed at every start
(:class:`ReplicationService`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from kraken.core.digest import Digest
from kraken.core.hashring import Ring
from kraken.core.journal import Journal, import_markers

log = Logger(namespace="kraken.origin")


class OriginPlacement:
    """This origin's place in its cluster: its own address, the ring, what peers dial.

    *ports* is the server's map of bound ports (filled once listening), read on each call.
    *healthy* is the verdict of the active health checks on the other members
    (:mod:`kraken.origin.membership`); this origin counts as healthy to itself.
    """

    def __init__(
        self,
        cluster: Sequence[str],
        max_replica: int,
        host: str,
        ports: Mapping[str, int],
        peer_id: bytes,
        self_address: str | None = None,
    ) -> None:
        self.cluster = list(cluster)
        self.max_replica = max_replica
        self.host = host
        self.ports = ports
        self.peer_id = peer_id
        self.configured_address = self_address
        self.healthy: Callable[[str], bool] = lambda address: True

    def is_healthy(self, address: str) -> bool:
        return address == self.self_address() or self.healthy(address)

    def others(self) -> list[str]:
        """The other members of the cluster (what the health checks probe)."""
        me = self.self_address()
        return [address for address in self.cluster if address != me]

    def locations(self, d: Digest) -> list[str]:
        """Where reads and uploads of *d* go: its healthy owners, else the next healthy member."""
        return self.ring().locations(d.hex, self.is_healthy)

    def self_address(self) -> str:
        """This origin's ``host:port`` as the cluster lists it."""
        return self.configured_address or f"{self.host}:{self.ports.get('http', 0)}"

    def ring(self) -> Ring:
        return Ring(self.cluster or [self.self_address()], self.max_replica)

    def other_owners(self, d: Digest) -> list[str]:
        """The owners of *d* besides this origin, in ring order, healthy or not (copies to a dead
        owner wait in the replication queue until it is back)."""
        me = self.self_address()
        return [address for address in self.ring().locations(d.hex) if address != me]

    def stand_ins(self, d: Digest) -> list[str]:
        """Healthy members after the owners of *d* in its rendezvous order, one for each owner found
        unhealthy: they hold a copy while it is down, so *d* keeps ``max_replica`` live copies."""
        ranked = self.ring().ranked(d.hex)
        owners, rest = ranked[: self.max_replica], ranked[self.max_replica :]
        down = sum(1 for o in owners if not self.is_healthy(o))
        me = self.self_address()
        return [n for n in rest if n != me and self.is_healthy(n)][:down]

    def peer_context(self) -> dict[str, Any]:
        """How peers reach this origin's seeder (``/internal/peercontext``)."""
        port = self.ports.get("peer")
        return {"peer_id": self.peer_id.hex(), "ip": self.host, "port": port, "origin": True}


class BlobSender(Protocol):
    """An origin client able to copy a stored blob to its origin."""

    def transfer(self, digest: Digest, path: str) -> Deferred[Any]: ...


QUEUE = "replication"


def task_key(d: Digest, owner: str) -> str:
    return f"{d.hex}>{owner}"


class Replicator:
    """Copies a committed blob to the other owners of its digest, through the journal.

    *sender_for* gives a client for an origin address; *blob_path* where a digest is stored.
    """

    def __init__(
        self,
        placement: OriginPlacement,
        blob_path: Callable[[Digest], Any],
        sender_for: Callable[[str], BlobSender],
        journal: Journal,
        retry: tuple[float, float] = (1.0, 300.0),
        legacy_markers: Path | None = None,
        on_corrupt: Callable[[], None] | None = None,
    ) -> None:
        self.placement = placement
        self.blob_path = blob_path
        self.sender_for = sender_for
        self.legacy_markers = legacy_markers
        self.on_corrupt = on_corrupt
        self.queue = journal.queue(QUEUE, self._copy, retry[0], retry[1],
                                   group=lambda p: Digest.parse(p["digest"]).hex)

    def replicate(self, d: Digest, owners: list[str] | None = None) -> None:
        """Queue copies of *d* to *owners* (default: every other owner, and a stand-in for each owner
        that is down), committed before this returns."""
        if owners is None:
            targets = self.placement.other_owners(d) + self.placement.stand_ins(d)
        else:
            targets = owners
        self.queue.add_many((task_key(d, o), {"digest": str(d), "owner": o}) for o in targets)

    def holds(self, d: Digest) -> bool:
        """Whether a copy of *d* still waits to be made (eviction must keep the blob)."""
        return self.queue.holds_group(d.hex)

    def _copy(self, payload: dict[str, Any]) -> Deferred[Any]:
        d, owner = Digest.parse(payload["digest"]), str(payload["owner"])
        path = Path(self.blob_path(d))
        if not path.is_file():
            log.warn("copy of {d} to {owner} dropped: the blob is gone here", d=d, owner=owner)
            return succeed("lost")
        sent: Deferred[Any] = self.sender_for(owner).transfer(d, str(path))
        return sent.addCallback(lambda _: "ok")

    def stop(self) -> None:
        """Stop retrying (the tasks stay in the journal for the next start)."""
        self.queue.stop()

    def resume(self) -> int:
        """Start every copy the journal holds (and the marker files of earlier versions); how many."""
        if self.legacy_markers is not None:
            import_markers(self.legacy_markers, self.queue, self._legacy_tasks, self.on_corrupt)
        return self.queue.resume()

    def _legacy_tasks(self, record: dict[str, Any], path: Path) -> list[tuple[str, dict[str, Any]]]:
        """A marker of an earlier version stood for a copy to every other owner."""
        d = Digest.parse(record["digest"])
        if path.name != f"{d.hex}.json":
            raise ValueError("marker name does not match its content")
        return [(task_key(d, o), {"digest": str(d), "owner": o}) for o in self.placement.other_owners(d)]


class ReplicationService(Service):
    """Resumes the copies left pending in the journal once this origin knows its own address."""

    def __init__(self, replicator: Replicator, clock: IReactorTime) -> None:
        self.replicator = replicator
        self.clock = clock
        self.call: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()
        self.call = self.clock.callLater(0, self._resume_when_bound)

    def _resume_when_bound(self) -> None:
        placement = self.replicator.placement
        if placement.configured_address is None and not placement.ports.get("http"):
            self.call = self.clock.callLater(0.1, self._resume_when_bound)
            return
        self.call = None
        self.replicator.resume()

    def stopService(self) -> Any:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.replicator.stop()
        return super().stopService()
