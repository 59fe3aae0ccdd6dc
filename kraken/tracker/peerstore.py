"""In-memory peer store: who announced which blob, forgotten ``ttl`` seconds after the last announce.

Two caps bound what announces can make it hold: records per info hash (``max_peers_per_blob``)
and records per announced IP address (``max_blobs_per_peer``). A new record over a cap is
refused with :class:`PeerLimit`; a peer refreshing its own record never is. A record counts
against its address until it is purged (:meth:`purge`, every minute), expired ones of the blob
in question are dropped at once when its cap is reached.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime

PEERS_PER_BLOB = "peers_per_blob"
BLOBS_PER_PEER = "blobs_per_peer"


@dataclass(frozen=True)
class PeerRecord:
    peer_id: str  # hex
    ip: str
    port: int
    complete: bool = False
    origin: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"peer_id": self.peer_id, "ip": self.ip, "port": self.port, "origin": self.origin,
                "complete": self.complete}


class PeerLimit(Exception):
    """A new record would exceed a cap; ``reason`` is :data:`PEERS_PER_BLOB` or :data:`BLOBS_PER_PEER`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PeerStore:
    def __init__(
        self,
        clock: IReactorTime,
        ttl: float = 3600.0,
        rng: random.Random | None = None,
        max_peers_per_blob: int = 5000,
        max_blobs_per_peer: int = 10000,
    ) -> None:
        self.clock = clock
        self.ttl = ttl
        self.rng = rng or random.Random()
        self.max_peers_per_blob = max_peers_per_blob
        self.max_blobs_per_peer = max_blobs_per_peer
        self._peers: dict[str, dict[str, tuple[PeerRecord, float]]] = {}
        self._per_ip: dict[str, int] = {}
        self._count = 0

    def update(self, info_hash: str, record: PeerRecord) -> None:
        """Add or refresh *record*; raises :class:`PeerLimit` for a new record over a cap."""
        peers = self._peers.get(info_hash, {})
        old = peers.get(record.peer_id)
        new_here = old is None or old[0].ip != record.ip
        if old is None and len(peers) >= self.max_peers_per_blob:
            self._drop_expired(info_hash)
            peers = self._peers.get(info_hash, {})
            if len(peers) >= self.max_peers_per_blob:
                cap = self.max_peers_per_blob
                raise PeerLimit(PEERS_PER_BLOB, f"this blob already has {cap} peers (the tracker's cap)")
        if new_here and self._per_ip.get(record.ip, 0) >= self.max_blobs_per_peer:
            cap = self.max_blobs_per_peer
            raise PeerLimit(
                BLOBS_PER_PEER, f"address {record.ip} already has {cap} announced blobs (the tracker's cap)"
            )
        if old is not None:
            self._uncount(old[0].ip)
        self._per_ip[record.ip] = self._per_ip.get(record.ip, 0) + 1
        self._count += 1
        self._peers.setdefault(info_hash, {})[record.peer_id] = (record, self.clock.seconds() + self.ttl)

    def sample(self, info_hash: str, limit: int) -> list[PeerRecord]:
        now = self.clock.seconds()
        live = [r for r, expires in self._peers.get(info_hash, {}).values() if expires > now]
        return self.rng.sample(live, min(limit, len(live)))

    def _uncount(self, ip: str) -> None:
        self._count -= 1
        left = self._per_ip.get(ip, 0) - 1
        if left > 0:
            self._per_ip[ip] = left
        else:
            self._per_ip.pop(ip, None)

    def _drop_expired(self, info_hash: str) -> int:
        now = self.clock.seconds()
        peers = self._peers.get(info_hash, {})
        gone = [p for p, (_, expires) in peers.items() if expires <= now]
        for pid in gone:
            self._uncount(peers.pop(pid)[0].ip)
        if not peers:
            self._peers.pop(info_hash, None)
        return len(gone)

    def purge(self) -> int:
        return sum(self._drop_expired(info_hash) for info_hash in list(self._peers))

    def blobs_at(self, ip: str) -> int:
        """Records announced with address *ip* (expired ones until purged)."""
        return self._per_ip.get(ip, 0)

    def __len__(self) -> int:
        return self._count
