"""In-memory peer store: who announced which blob, forgotten ``ttl`` seconds after the last announce."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime


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


class PeerStore:
    def __init__(self, clock: IReactorTime, ttl: float = 3600.0, rng: random.Random | None = None) -> None:
        self.clock = clock
        self.ttl = ttl
        self.rng = rng or random.Random()
        self._peers: dict[str, dict[str, tuple[PeerRecord, float]]] = {}

    def update(self, info_hash: str, record: PeerRecord) -> None:
        self._peers.setdefault(info_hash, {})[record.peer_id] = (record, self.clock.seconds() + self.ttl)

    def sample(self, info_hash: str, limit: int) -> list[PeerRecord]:
        now = self.clock.seconds()
        live = [r for r, expires in self._peers.get(info_hash, {}).values() if expires > now]
        return self.rng.sample(live, min(limit, len(live)))

    def purge(self) -> int:
        now = self.clock.seconds()
        dropped = 0
        for info_hash in list(self._peers):
            peers = self._peers[info_hash]
            for pid in [p for p, (_, expires) in peers.items() if expires <= now]:
                del peers[pid]
                dropped += 1
            if not peers:
                del self._peers[info_hash]
        return dropped

    def __len__(self) -> int:
        return sum(len(p) for p in self._peers.values())
