"""The origin's part of garbage collection: sweep what the build-index did not mark.

The build-index sends the digests every tag reaches (``POST /internal/gc``); this origin
removes the other blobs of its store, and of its backends the blobs it is the first owner of
(so one origin decides for each backend object: the one proxies and the build-index ask).

A blob is spared while it is recent: written, read, or asked about (a proxy's ``HEAD``
before it skips an upload, the build-index's dependency check before it stores a tag)
within the grace period. Those questions come before any tag can point at the blob, so a
blob an unfinished push relies on is never swept; the time of each is the store entry's
access time, or for a blob only in a backend a note kept in memory here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from kraken.backends.base import BlobNotFound, ListsEntries
from kraken.core.digest import Digest
from kraken.core.metrics import Metrics
from kraken.origin.blobs import OriginBlobs

log = Logger(namespace="kraken.origin.gc")
HEX = re.compile(r"[0-9a-f]{64}|[0-9a-f]{128}")  # a blob's bare name: sha256 or sha512
BATCH = 500  # store entries checked per reactor turn
MAX_LISTED = 1000  # swept digests named in a report; the counts are complete
WANTED_KEEP = 7 * 86400.0  # notes older than this are dropped (grace periods are shorter)


class GCBusy(Exception):
    pass


@dataclass
class SweepReport:
    dry_run: bool
    swept: list[dict[str, Any]] = field(default_factory=list)
    swept_count: int = 0
    reclaimed_bytes: dict[str, int] = field(default_factory=lambda: {"store": 0, "backend": 0})
    kept_recent: int = 0

    def add(self, d: Digest, size: int, where: str) -> None:
        self.swept_count += 1
        self.reclaimed_bytes[where] += size
        if len(self.swept) < MAX_LISTED:
            self.swept.append({"digest": str(d), "bytes": size, "where": where})

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "swept": self.swept, "swept_count": self.swept_count,
                "reclaimed_bytes": self.reclaimed_bytes, "kept_recent": self.kept_recent}


class OriginSweeper:
    def __init__(
        self, blobs: OriginBlobs, is_first_owner: Callable[[Digest], bool], members: Callable[[], list[str]],
        clock: IReactorTime, metrics: Metrics,
    ) -> None:
        self.blobs = blobs
        self.is_first_owner = is_first_owner
        self.members = members  # every origin of the cluster (the build-index sweeps them all)
        self.clock = clock
        self.wanted: dict[str, float] = {}
        self.running = False
        self.m_swept = metrics.counter("gc_swept_blobs", "blobs removed by garbage collection", ["where"])
        self.m_bytes = metrics.counter("gc_reclaimed_bytes", "bytes reclaimed by garbage collection",
                                       ["where"])

    def asked_for(self, d: Digest) -> None:
        """A client relies on *d* being here (it asked whether it is): spare it for a grace period."""
        now = self.clock.seconds()
        self.wanted[d.hex] = now
        self.blobs.cas.touch(d)
        if len(self.wanted) > 100_000:
            self.wanted = {k: t for k, t in self.wanted.items() if now - t < WANTED_KEEP}

    def _last_use(self, hex_digest: str, *times: float) -> float:
        return max(self.wanted.get(hex_digest, 0.0), *times)

    def _store_times(self, d: Digest) -> tuple[float, ...]:
        try:
            st = self.blobs.cas.blob_path(d).stat()
        except OSError:
            return ()
        return (st.st_atime, st.st_mtime)

    @inlineCallbacks
    def sweep(self, live: set[str], grace: float, dry_run: bool) -> Any:
        if self.running:
            raise GCBusy("a garbage collection is running on this origin")
        self.running = True
        try:
            report = SweepReport(dry_run)
            yield self._sweep_store(live, grace, report)
            yield self._sweep_backends(live, grace, report)
        finally:
            self.running = False
        if not dry_run:
            for where, size in report.reclaimed_bytes.items():
                self.m_bytes.labels(where).inc(size)
            log.info("garbage collection swept {n} blobs ({store} bytes here, {backend} in backends)",
                     n=report.swept_count, store=report.reclaimed_bytes["store"],
                     backend=report.reclaimed_bytes["backend"])
        return report

    @inlineCallbacks
    def _sweep_store(self, live: set[str], grace: float, report: SweepReport) -> Any:
        # a blob's check and its removal happen in one reactor turn, so no request can ask for
        # it in between; the reactor gets a turn between batches of a large store
        for i, entry in enumerate(list(self.blobs.cas.entries())):
            if i and i % BATCH == 0:
                yield deferLater(self.clock, 0, lambda: None)
            d = entry.digest
            if d.hex in live:
                continue
            now = self.clock.seconds()
            if now - self._last_use(d.hex, *self._store_times(d)) < grace or self.blobs.busy(d):
                report.kept_recent += 1
                continue
            if not report.dry_run:
                if not self._remove_local(d):
                    continue
                self.m_swept.labels("store").inc()
            report.add(d, entry.size, "store")

    def _remove_local(self, d: Digest) -> bool:
        self.blobs.let_go(d)
        return self.blobs.cas.delete(d)

    @inlineCallbacks
    def _sweep_backends(self, live: set[str], grace: float, report: SweepReport) -> Any:
        seen: set[int] = set()
        for route in self.blobs.backends.routes:
            backend = route.backend
            if id(backend) in seen or not isinstance(backend, ListsEntries):
                continue
            seen.add(id(backend))
            entries = yield backend.entries("")
            for entry in entries:
                if not HEX.fullmatch(entry.name) or entry.name in live:
                    continue  # tags kept in the same backend, or live blobs
                d = Digest.from_hex(entry.name)
                if not self.is_first_owner(d):
                    continue
                now = self.clock.seconds()
                if (now - self._last_use(d.hex, entry.modified, *self._store_times(d)) < grace
                        or self.blobs.writebacks.holds(d)):
                    report.kept_recent += 1
                    continue
                if not report.dry_run:
                    try:
                        yield backend.delete("", entry.name)
                    except BlobNotFound:
                        continue
                    self.m_swept.labels("backend").inc()
                report.add(d, entry.size, "backend")

