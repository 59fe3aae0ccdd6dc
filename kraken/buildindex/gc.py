"""Garbage collection, run by a build-index: mark from every tag, have every origin sweep the rest.

Mark: each tag's manifest is read from the origins (namespace = its repository) and followed:
an image's config and layers, an index's child manifests. A manifest that cannot be read for
another reason than its absence stops the run before anything is swept: a partial mark
would sweep live blobs. Sweep: every origin of the cluster (``/internal/cluster``) gets the
marked digests and the grace period and removes the rest of its store and backends
(:mod:`kraken.origin.gc`).

A live manifest keeps its referrers (OCI 1.1: signatures, SBOMs pushed with a ``subject``,
untagged) live too, and theirs in turn: *referrers_of* gives the referrers the build-index's
index records for a subject. Other roots plug in through :attr:`Collector.extra_roots`:
callables returning ``(repository, digest)`` pairs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from kraken.backends.base import BlobNotFound
from kraken.buildindex.tags import TagService
from kraken.core.digest import Digest
from kraken.core.metrics import Metrics
from kraken.p2p.origins import OriginCluster
from kraken.registry.errors import RegistryError
from kraken.registry.manifests import parse_manifest

log = Logger(namespace="kraken.buildindex.gc")
Roots = Iterable[tuple[str, str]]  # (repository, digest) pairs to keep


class ReferrerView(Protocol):
    """The build-index's referrers index as garbage collection uses it."""

    def subjects(self) -> list[tuple[str, Digest]]: ...
    def referrers(self, name: str, target: Digest) -> list[Digest]: ...
    def forget(self, name: str, target: Digest, referrer: Digest) -> bool: ...
    def recorded_at(self, name: str, target: Digest, referrer: Digest) -> float | None: ...


class GCError(Exception):
    """The run stopped before sweeping (a manifest could not be read, an origin failed)."""


class Collector:
    def __init__(self, tags: TagService, origins: OriginCluster, scratch: Path, clock: IReactorTime,
                 metrics: Metrics, referrers: ReferrerView | None = None) -> None:
        self.tags = tags
        self.referrers = referrers
        self.origins = origins
        self.scratch = scratch
        self.clock = clock
        self.running = False
        self.extra_roots: list[Callable[[], Roots | Deferred[Roots]]] = []
        self.m_runs = metrics.counter("gc_runs", "garbage collection runs by outcome", ["outcome"])
        self.m_bytes = metrics.counter("gc_reclaimed_bytes", "bytes the origins reclaimed in garbage "
                                       "collections this build-index ran", ["where"])
        self.m_blobs = metrics.counter("gc_swept_blobs", "blobs swept in garbage collections this "
                                       "build-index ran")

    @inlineCallbacks
    def mark(self) -> Any:
        """The hex digests every tag (and extra root) reaches, and the dangling tags."""
        live: set[str] = set()
        dangling: list[str] = []
        roots: list[tuple[str, str, str]] = []
        for entry in (yield self.tags.list("")):
            repo, _, tag = entry.rpartition(":")
            digest = yield self.tags.get(repo, tag)
            if digest is not None:
                roots.append((repo, digest, entry))
        for source in self.extra_roots:
            extra = yield maybeDeferred(source)
            roots.extend((repo, digest, f"{repo}@{digest}") for repo, digest in extra)
        for repo, digest, name in roots:
            found = yield self._mark_manifest(repo, Digest.parse(digest), live)
            if not found:
                dangling.append(name)
        return live, dangling

    @inlineCallbacks
    def _mark_manifest(self, repo: str, d: Digest, live: set[str]) -> Any:
        if d.hex in live:
            return True
        fd, name = tempfile.mkstemp(dir=self.scratch, suffix=".manifest")
        os.close(fd)
        tmp = Path(name)
        try:
            try:
                yield self.origins.download(repo, d, str(tmp))
            except BlobNotFound:
                return False
            except Exception as e:
                raise GCError(f"reading manifest {d} of {repo} failed: {e}") from None
            live.add(d.hex)
            try:
                manifest = parse_manifest(tmp.read_bytes())
            except RegistryError:
                return True  # not a manifest (a tag on a plain blob): keep just it
        finally:
            tmp.unlink(missing_ok=True)
        live.update(Digest.parse(b).hex for b in manifest.blobs)
        for child in manifest.children:
            yield self._mark_manifest(repo, Digest.parse(child), live)
        for referrer in self.referrers.referrers(repo, d) if self.referrers is not None else ():
            yield self._mark_manifest(repo, referrer, live)
        return True

    def _forget_dead_referrers(self, live: set[str], grace: float) -> int:
        """Drop the index entries of referrers whose subject the mark did not reach, once they are
        older than the grace period (a subject pushed by digest may be tagged in a moment)."""
        if self.referrers is None:
            return 0
        now, forgotten = self.clock.seconds(), 0
        for repo, subject in self.referrers.subjects():
            if subject.hex in live:
                continue
            for referrer in self.referrers.referrers(repo, subject):
                recorded = self.referrers.recorded_at(repo, subject, referrer)
                if recorded is not None and now - recorded >= grace \
                        and self.referrers.forget(repo, subject, referrer):
                    forgotten += 1
        return forgotten

    @inlineCallbacks
    def run(self, grace: float, dry_run: bool) -> Any:
        if self.running:
            raise GCError("a garbage collection is already running")
        self.running = True
        try:
            report = yield self._run(grace, dry_run)
        except Exception:
            self.m_runs.labels("failed").inc()
            raise
        finally:
            self.running = False
        self.m_runs.labels("dry_run" if dry_run else "ok").inc()
        return report

    @inlineCallbacks
    def _run(self, grace: float, dry_run: bool) -> Any:
        started = self.clock.seconds()
        live, dangling = yield self.mark()
        try:
            members = yield self.origins.cluster_members()
        except Exception as e:
            raise GCError(f"the origin cluster's members are unknown: {e}") from None
        reports = {}
        for address in members:
            try:
                client = self.origins.client(address)
                reports[address] = yield client.collect_garbage(sorted(live), grace, dry_run)
            except Exception as e:
                raise GCError(f"origin {address} failed to sweep: {e}") from None
        reclaimed = {"store": 0, "backend": 0}
        swept = 0
        for report in reports.values():
            swept += int(report.get("swept_count", 0))
            for where, size in (report.get("reclaimed_bytes") or {}).items():
                if where in reclaimed:
                    reclaimed[where] += int(size)
        forgotten = 0 if dry_run else self._forget_dead_referrers(live, grace)
        if not dry_run:
            self.m_blobs.inc(swept)
            for where, size in reclaimed.items():
                self.m_bytes.labels(where).inc(size)
        log.info("garbage collection{dry}: {live} live blobs, {swept} swept, {store} + {backend} bytes "
                 "reclaimed", dry=" (dry run)" if dry_run else "", live=len(live), swept=swept,
                 store=reclaimed["store"], backend=reclaimed["backend"])
        return {"dry_run": dry_run, "grace": grace, "live": len(live), "dangling_tags": dangling[:1000],
                "referrers_forgotten": forgotten,
                "swept_count": swept, "reclaimed_bytes": reclaimed, "origins": reports,
                "seconds": round(self.clock.seconds() - started, 3)}
