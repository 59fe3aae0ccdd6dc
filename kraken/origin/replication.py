"""Which origins own a digest, and copying a new blob to the other owners.

An origin cluster places each digest on ``max_replica`` origins by rendezvous hashing over the
configured ``cluster`` addresses (this origin alone when the list is empty). A blob uploaded to
one owner is copied to every other owner, one after the other; a failed copy is logged, the
others still go.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from kraken.core.digest import Digest
from kraken.core.hashring import Ring

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
    ) -> None:
        self.placement = placement
        self.blob_path = blob_path
        self.sender_for = sender_for

    @inlineCallbacks
    def replicate(self, d: Digest) -> Generator[Deferred[Any], Any, None]:
        for address in self.placement.other_owners(d):
            try:
                yield self.sender_for(address).transfer(d, str(self.blob_path(d)))
            except Exception as e:
                log.warn("copy of {d} to {a} failed: {e}", d=d, a=address, e=e)
