"""Disk management of a blob cache: TTI/TTL cleanup and a high-water mark with LRU eviction.

Each :meth:`Evictor.run` (on the server's ``cleanup_interval`` timer) first deletes the blobs
not read for ``tti`` seconds or stored longer than ``ttl`` (0 = no limit), then, while the
store's utilisation is at or above ``high_water`` (a fraction), deletes the least recently read
blobs until it is below ``low_water``. Utilisation is the store's bytes over ``capacity`` when
one is set (a quota on a shared disk), else the used share of the filesystem holding it.

A blob the server still needs is never deleted: *busy(digest)* is asked right before each
deletion (being downloaded, seeded to a peer, awaiting write-back or a copy to another owner,
as each server defines it); *before_delete(digest)* lets the server let go of it first (drop
its seeding torrent).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from kraken.core.cas import CAStore, Entry
from kraken.core.digest import Digest
from kraken.core.metrics import Metrics

log = Logger(namespace="kraken.core.eviction")


@dataclass(frozen=True)
class EvictionPolicy:
    tti: float = 0.0
    ttl: float = 0.0
    high_water: float = 0.0  # 0: no utilisation limit
    low_water: float = 0.0  # 0: high_water minus 10 points
    capacity: int = 0  # bytes; 0: the filesystem's size

    def target(self) -> float:
        return self.low_water if self.low_water > 0 else max(0.0, self.high_water - 0.1)


class Evictor:
    def __init__(
        self,
        clock: IReactorTime,
        cas: CAStore,
        policy: EvictionPolicy,
        metrics: Metrics,
        busy: Callable[[Digest], bool],
        before_delete: Callable[[Digest], None] | None = None,
        disk_usage: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.clock = clock
        self.cas = cas
        self.policy = policy
        self.busy = busy
        self.before_delete = before_delete or (lambda d: None)
        self.disk_usage = disk_usage or self._filesystem
        self.m_evicted = metrics.counter("evictions", "blobs deleted from the store, by reason", ["reason"])
        self.m_bytes = metrics.gauge("store_bytes", "bytes of blobs in the store (at the last cleanup)")
        self.m_utilisation = metrics.gauge("store_utilisation", "used share of the store at the last cleanup")

    def _filesystem(self) -> tuple[int, int]:
        usage = shutil.disk_usage(self.cas.root)
        return usage.used, usage.total

    def utilisation(self, stored: int) -> float:
        if self.policy.capacity > 0:
            return stored / self.policy.capacity
        used, total = self.disk_usage()
        return used / total if total else 0.0

    def _delete(self, e: Entry, reason: str) -> bool:
        if self.busy(e.digest):
            return False
        self.before_delete(e.digest)
        if not self.cas.delete(e.digest):
            return False
        self.m_evicted.labels(reason).inc()
        return True

    @property
    def enabled(self) -> bool:
        return bool(self.policy.tti or self.policy.ttl or self.policy.high_water)

    def run(self) -> list[Digest]:
        """One cleanup pass; the digests deleted."""
        policy, now = self.policy, self.clock.seconds()
        entries = list(self.cas.entries())
        gone: list[Digest] = []
        kept: list[Entry] = []
        for e in entries:
            idle = bool(policy.tti) and now - e.accessed > policy.tti
            old = bool(policy.ttl) and now - e.modified > policy.ttl
            if (idle or old) and self._delete(e, "tti" if idle else "ttl"):
                gone.append(e.digest)
            else:
                kept.append(e)
        stored = sum(e.size for e in kept)
        if policy.high_water > 0 and self.utilisation(stored) >= policy.high_water:
            target = policy.target()
            before = len(gone)
            for e in sorted(kept, key=lambda e: e.accessed):  # least recently read first
                if self.utilisation(stored) < target:
                    break
                if self._delete(e, "disk"):
                    gone.append(e.digest)
                    stored -= e.size
            evicted = len(gone) - before
            if self.utilisation(stored) >= target:
                log.warn("store {root} still at {u:.0%} after evicting {n} blobs: the rest are in use",
                         root=str(self.cas.root), u=self.utilisation(stored), n=evicted)
            else:
                log.info("store {root} over {high:.0%}: evicted {n} least recently read blobs",
                         root=str(self.cas.root), high=policy.high_water, n=evicted)
        self.m_bytes.set(stored)
        self.m_utilisation.set(self.utilisation(stored))
        return gone
