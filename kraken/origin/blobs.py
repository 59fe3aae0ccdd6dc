"""The origin's blob keeping: local CAS, on-demand backend fetches, metainfo, write-back.

Fetches are deduplicated per digest (one in flight; callers see "fetching" until it is in
the store) and a failed fetch is remembered for ``error_ttl`` seconds. Write-back to the
namespace's backend is :class:`~kraken.origin.writeback.WriteBackQueue`'s: committed to the
origin's journal, retried with backoff until it succeeds, resumed after a restart.

Every "is it here" goes through :class:`~kraken.core.verify.BlobVerifier`: a local copy that
no longer matches its digest is quarantined, its seeding torrent dropped, and the blob
fetched again as if it had never been here: from the namespace's backend, else from the
other owners of the digest (their own stores only, so two repairing origins never wait on
each other).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from kraken.backends.base import BackendRouter, BlobNotFound
from kraken.core.cas import CAStore
from kraken.core.digest import Digest
from kraken.core.journal import Journal
from kraken.core.metrics import Metrics
from kraken.core.reactor import IServerReactor
from kraken.core.verify import BlobVerifier
from kraken.origin.writeback import WriteBackQueue
from kraken.p2p.metainfo import MetaInfo, generate, piece_length_for
from kraken.p2p.scheduler import Scheduler
from kraken.p2p.storage import METAINFO, PieceStore, Torrent

log = Logger(namespace="kraken.origin.blobs")


class Replica(Protocol):
    """Another origin owning a digest (:class:`~kraken.p2p.origins.OriginClient`)."""

    base: str

    def download(
        self, namespace: str, digest: Digest, dest_path: str, local: bool = False
    ) -> Deferred[Any]: ...


class State(enum.Enum):
    READY = "ready"
    FETCHING = "fetching"


class FetchFailed(Exception):
    pass


class OriginBlobs:
    def __init__(
        self,
        reactor: IServerReactor,
        cas: CAStore,
        backends: BackendRouter,
        piece_lengths: dict[int, int],
        metrics: Metrics,
        error_ttl: float = 15.0,
        writeback_retry: tuple[float, float] = (1.0, 300.0),
        verify_on_serve: bool = True,
        journal: Journal | None = None,
    ) -> None:
        self.reactor = reactor
        self.cas = cas
        self.pieces = PieceStore(cas)
        self.verifier = BlobVerifier(reactor, cas, metrics, verify_on_serve)
        self.verifier.on_corrupt(self._drop_seed)
        self.scheduler: Scheduler | None = None  # the P2P scheduler seeding our blobs
        self.replicas: Callable[[Digest], Sequence[Replica]] | None = None  # the other owners of a digest
        self.damaged: set[str] = set()  # quarantined here and not fetched again yet
        self.pending_copy: Callable[[Digest], bool] = lambda d: False  # a copy to another owner waits
        self.committing: dict[str, int] = {}  # uploads being stored, not yet queued for write-back
        self.backends = backends
        self.piece_lengths = piece_lengths
        self.error_ttl = error_ttl
        self.fetching: dict[str, Deferred[Any]] = {}
        self.failed: dict[str, tuple[float, str]] = {}
        self.writebacks = WriteBackQueue(
            journal if journal is not None else Journal(":memory:", reactor), cas, backends,
            writeback_retry[0], writeback_retry[1], verifier=self.verifier,
            legacy_markers=cas.root / "writeback",
        )
        self.m_fetches = metrics.counter("backend_fetches", "blobs fetched from a backend", ["result"])

    def _thread(self, f: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    # -- metainfo ------------------------------------------------------------------------------
    def metainfo(self, d: Digest) -> Deferred[MetaInfo | None]:
        """Metainfo of a local blob (generated on first use), or ``None`` if not local."""
        mi = self.pieces.metainfo(d)
        if mi is not None:
            return succeed(mi)
        size = self.cas.size(d)
        if size is None:
            return succeed(None)
        return self._thread(self._generate, d, size)

    def _generate(self, d: Digest, size: int) -> MetaInfo:
        mi = generate(self.cas.blob_path(d), d, piece_length_for(size, self.piece_lengths))
        self.cas.write_meta(d, METAINFO, mi.to_json())
        return mi

    @inlineCallbacks
    def seed(self, namespace: str, d: Digest, info_hash: bytes) -> Any:
        """The scheduler's seed source: a torrent for a local blob; else start fetching, ``None``."""
        ok = yield self.verifier.check(d)
        if not ok:
            self.start_fetch(namespace, d)
            return None
        mi = yield self.metainfo(d)
        if mi is None:
            return None
        on_corrupt = (lambda t: self._seed_corrupt(namespace, t)) if self.verifier.enabled else None
        torrent: Torrent | None = self.pieces.seed(mi, on_corrupt)
        return torrent

    def _seed_corrupt(self, namespace: str, torrent: Torrent) -> None:
        """A piece of a blob we seed failed its hash: stop seeding it and fetch it again.

        Not from inside the read that found it: dropping the torrent closes that connection.
        """
        self.reactor.callLater(0, self._repair, namespace, torrent.digest)

    def _repair(self, namespace: str, d: Digest) -> None:
        self.verifier.found_corrupt(d, "a piece failed its hash while seeding")
        self.start_fetch(namespace, d)

    def _drop_seed(self, d: Digest) -> None:
        self.damaged.add(d.hex)
        if self.scheduler is not None:
            for ctl in self.scheduler.controls_of(d):
                self.scheduler.remove(ctl.info_hash, RuntimeError(f"{d} is corrupt here"))

    # -- backend fetches ------------------------------------------------------------------------
    @inlineCallbacks
    def ensure(self, namespace: str, d: Digest) -> Any:
        """READY if local, FETCHING if a fetch runs or was started; BlobNotFound/FetchFailed otherwise."""
        ok = yield self.verifier.check(d)
        if ok:
            return State.READY
        if d.hex in self.fetching:
            return State.FETCHING
        failure = self.failed.get(d.hex)
        if failure is not None and self.reactor.seconds() - failure[0] < self.error_ttl:
            raise FetchFailed(failure[1])
        backend = self.backends.for_namespace(namespace)
        if backend is None:
            if self._repairable(d):
                self.start_fetch(namespace, d)
                return State.FETCHING
            raise BlobNotFound(f"{d} is not here and no backend serves namespace {namespace!r}")
        yield backend.stat(namespace, d.hex)
        if self.cas.has(d):
            return State.READY
        self.start_fetch(namespace, d)
        return State.FETCHING

    def _repairable(self, d: Digest) -> bool:
        """A copy of *d* was quarantined here and other owners may hold a good one."""
        return d.hex in self.damaged and self.replicas is not None

    def start_fetch(self, namespace: str, d: Digest) -> None:
        if d.hex in self.fetching or self.cas.has(d):
            return
        backend = self.backends.for_namespace(namespace)
        if backend is None and not self._repairable(d):
            return
        fetch = self._fetch(backend, namespace, d)
        if not fetch.called:
            self.fetching[d.hex] = fetch

    @inlineCallbacks
    def _fetch(self, backend: Any, namespace: str, d: Digest) -> Any:
        """From the backend; for a blob quarantined here, from the other owners if that fails."""
        tmp = self.cas.temp_path()
        sources: list[tuple[str, Callable[[], Deferred[Any]]]] = []
        if backend is not None:
            sources.append(("the backend", lambda: backend.download(namespace, d.hex, str(tmp))))
        if self._repairable(d):
            assert self.replicas is not None
            for replica in self.replicas(d):
                # local: a replica must not fetch in turn, or two repairing origins wait on each other
                sources.append((replica.base, partial(replica.download, namespace, d, str(tmp), local=True)))
        missing, last = 0, "no source to fetch from"
        try:
            for source, download in sources:
                try:
                    yield download()
                    yield self._thread(self.cas.ingest, tmp, d, True)
                    yield self.metainfo(d)
                except Exception as e:
                    tmp.unlink(missing_ok=True)
                    missing += isinstance(e, BlobNotFound)
                    result = "missing" if isinstance(e, BlobNotFound) else "error"
                    self.m_fetches.labels(result).inc()
                    log.warn("fetch of {digest} from {source} failed: {e}", digest=d, source=source, e=e)
                    last = f"fetch of {d} from {source} failed: {e}"
                    continue
                self.failed.pop(d.hex, None)
                self.damaged.discard(d.hex)
                self.m_fetches.labels("ok").inc()
                log.info("fetched {digest} from {source}", digest=d, source=source)
                return
            if backend is None and missing == len(sources):
                self.damaged.discard(d.hex)  # no owner has it: it is unknown (404), not failing
            else:
                self.failed[d.hex] = (self.reactor.seconds(), last)
        finally:
            self.fetching.pop(d.hex, None)

    # -- uploads -------------------------------------------------------------------------------
    @inlineCallbacks
    def commit_upload(self, uid: str, d: Digest) -> Any:
        """Verify and store an upload, then make its metainfo.

        Until it returns the blob counts as busy (eviction keeps it): the caller records its
        write-back in the same reactor turn as this fires."""
        self.committing[d.hex] = self.committing.get(d.hex, 0) + 1
        try:
            yield self._thread(self.cas.commit_upload, uid, d, True)
            yield self.metainfo(d)
        finally:
            left = self.committing.pop(d.hex) - 1
            if left:
                self.committing[d.hex] = left

    # -- disk management ---------------------------------------------------------------------------
    def busy(self, d: Digest) -> bool:
        """Whether eviction must keep *d*: fetched, awaiting write-back or a copy, or seeded to a peer."""
        if d.hex in self.fetching or d.hex in self.committing:
            return True
        if self.writebacks.holds(d) or self.pending_copy(d):
            return True
        controls = self.scheduler.controls_of(d) if self.scheduler is not None else []
        return any(ctl.conns or ctl.dialing for ctl in controls)

    def let_go(self, d: Digest) -> None:
        """Stop seeding *d* (it is about to be evicted)."""
        if self.scheduler is not None:
            for ctl in self.scheduler.controls_of(d):
                self.scheduler.remove(ctl.info_hash, RuntimeError(f"{d} evicted"))

    @inlineCallbacks
    def delete(self, namespace: str, d: Digest) -> Any:
        """Remove *d* from this store and from the namespace's backend; ``True`` if it was anywhere.

        Seeding stops and a pending write-back is dropped first, so neither brings it back.
        """
        self.writebacks.cancel(namespace, d)
        if self.scheduler is not None:
            for ctl in self.scheduler.controls_of(d):
                self.scheduler.remove(ctl.info_hash, RuntimeError(f"{d} was deleted"))
        found = yield self._thread(self.cas.delete, d)
        self.damaged.discard(d.hex)
        self.failed.pop(d.hex, None)
        backend = self.backends.for_namespace(namespace)
        if backend is not None:
            try:
                yield backend.delete(namespace, d.hex)
                found = True
            except BlobNotFound:
                pass
        return found

    def write_back(self, namespace: str, d: Digest) -> None:
        """Have the backend of *namespace* receive *d*; recorded on disk before this returns."""
        self.writebacks.add(namespace, d)
