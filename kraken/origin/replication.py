"""Which origins own a digest, and copying a new blob to the other owners.

An origin cluster places each digest on ``max_replica`` origins by rendezvous hashing over the
configured ``cluster`` addresses (this origin alone when the list is empty). A blob uploaded to
one owner is copied to every other owner, one after the other; a failed copy is logged, the
others still go.

With a *journal* directory the copies of a digest are recorded there (a synced marker file)
before the upload is acknowledged; the marker goes once every copy has landed. A failed copy
is tried again with capped exponential backoff on the injected clock; copies cut off by a
crash are made again when the server next starts (:class:`ReplicationService`). An
unreadable marker is set aside as ``.bad`` and counted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from kraken.core.cas import write_atomically
from kraken.core.digest import Digest
from kraken.core.hashring import Ring
from kraken.origin.writeback import backoff

log = Logger(namespace="kraken.origin")


class OriginPlacement:
    """This origin's place in its cluster: its own address, the ring, what peers dial.

    *ports* is the server's map of bound ports (filled once listening), read on each call.
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

    def self_address(self) -> str:
        """This origin's ``host:port`` as the cluster lists it."""
        return self.configured_address or f"{self.host}:{self.ports.get('http', 0)}"

    def ring(self) -> Ring:
        return Ring(self.cluster or [self.self_address()], self.max_replica)

    def other_owners(self, d: Digest) -> list[str]:
        """The owners of *d* besides this origin, in ring order."""
        me = self.self_address()
        return [address for address in self.ring().locations(d.hex) if address != me]

    def peer_context(self) -> dict[str, Any]:
        """How peers reach this origin's seeder (``/internal/peercontext``)."""
        port = self.ports.get("peer")
        return {"peer_id": self.peer_id.hex(), "ip": self.host, "port": port, "origin": True}


class BlobSender(Protocol):
    """An origin client able to copy a stored blob to its origin."""

    def transfer(self, digest: Digest, path: str) -> Deferred[Any]: ...


class Replicator:
    """Copies a committed blob to the other owners of its digest.

    *sender_for* gives a client for an origin address; *blob_path* where a digest is stored.
    """

    def __init__(
        self,
        placement: OriginPlacement,
        blob_path: Callable[[Digest], Any],
        sender_for: Callable[[str], BlobSender],
        journal: Path | None = None,
        on_corrupt: Callable[[], None] | None = None,
        clock: IReactorTime | None = None,
        retry: tuple[float, float] = (1.0, 300.0),
    ) -> None:
        self.clock = clock
        self.retry_first, self.retry_cap = retry
        self.retries: dict[str, IDelayedCall] = {}
        self.attempts: dict[str, int] = {}
        self.placement = placement
        self.blob_path = blob_path
        self.sender_for = sender_for
        self.journal = journal
        if journal is not None:
            journal.mkdir(parents=True, exist_ok=True)
        self.on_corrupt = on_corrupt or (lambda: None)

    @inlineCallbacks
    def replicate(self, d: Digest, owners: list[str] | None = None) -> Generator[Deferred[Any], Any, None]:
        """Copy *d* to *owners* (default: every other owner, recorded on disk before the first yield)."""
        marker = self.journal / f"{d.hex}.json" if self.journal is not None else None
        if owners is None:
            pending = self.retries.pop(d.hex, None)
            if pending is not None and pending.active():
                pending.cancel()
            self.attempts.pop(d.hex, None)
            owners = self.placement.other_owners(d)
            if marker is not None and owners:
                write_atomically(marker, json.dumps({"digest": str(d)}).encode())  # before the 201
        failed = []
        for address in owners:
            try:
                yield self.sender_for(address).transfer(d, str(self.blob_path(d)))
            except Exception as e:
                failed.append(address)
                log.warn("copy of {d} to {a} failed: {e}", d=d, a=address, e=e)
        if failed and Path(self.blob_path(d)).is_file():
            if self.clock is not None:
                attempt = self.attempts[d.hex] = self.attempts.get(d.hex, 0) + 1
                delay = backoff(attempt, self.retry_first, self.retry_cap)
                self.retries[d.hex] = self.clock.callLater(delay, self._retry, d, failed)
            return
        self.attempts.pop(d.hex, None)
        if marker is not None:
            marker.unlink(missing_ok=True)

    def _retry(self, d: Digest, owners: list[str]) -> None:
        self.retries.pop(d.hex, None)
        self.replicate(d, owners)

    def stop(self) -> None:
        """Stop retrying (the markers stay for the next start)."""
        for call in self.retries.values():
            if call.active():
                call.cancel()
        self.retries.clear()

    def resume(self) -> int:
        """Copy again every digest whose marker a previous run left; how many."""
        if self.journal is None:
            return 0
        started = 0
        for path in sorted(self.journal.glob("*.json")):
            try:
                d = Digest.parse(json.loads(path.read_bytes())["digest"])
                if path.name != f"{d.hex}.json":
                    raise ValueError("marker name does not match its content")
            except (OSError, ValueError, KeyError, TypeError) as e:
                aside = path.with_suffix(".bad")
                os.replace(path, aside)
                self.on_corrupt()
                log.error("unreadable replication marker moved to {aside}: {e}", aside=str(aside), e=e)
                continue
            if not Path(self.blob_path(d)).is_file():
                log.warn("copies of {d} not resumed: the blob is gone", d=d)
                path.unlink(missing_ok=True)
                continue
            self.replicate(d)
            started += 1
        if started:
            log.info("resumed copies of {n} blobs to the other owners", n=started)
        return started


class ReplicationService(Service):
    """Resumes the copies left pending on disk once this origin knows its own address."""

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
