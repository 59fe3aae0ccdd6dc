"""The agent's blobs: downloads through the scheduler, a local cache, and the registry's fetch().

``AgentBlobs.fetch(namespace, digest)`` is what the agent's HTTP API and its registry port
use: it fires with the local path of the complete, verified blob (downloading it through
P2P first when needed) or fails with :class:`~kraken.backends.base.BlobNotFound`.

A cached copy is checked before it is served or seeded
(:class:`~kraken.core.verify.BlobVerifier`); one that no longer matches its digest is
quarantined, its torrent dropped, and the blob downloaded again from the swarm.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.agent.tracker_client import TrackerClient
from kraken.core.digest import Digest
from kraken.core.metrics import Metrics
from kraken.core.reactor import IServerReactor
from kraken.core.verify import BlobVerifier
from kraken.p2p.metainfo import MetaInfo
from kraken.p2p.scheduler import Scheduler, TorrentControl
from kraken.p2p.storage import DownloadTorrent, PieceStore, Torrent

log = Logger(namespace="kraken.agent.blobs")


class AgentBlobs:
    def __init__(
        self,
        reactor: IServerReactor,
        store: PieceStore,
        tracker: TrackerClient,
        metrics: Metrics,
        verify_on_serve: bool = True,
    ) -> None:
        self.reactor = reactor
        self.store = store
        self.tracker = tracker
        self.scheduler: Scheduler | None = None
        self.starting: dict[str, list[Deferred[Any]]] = {}
        self.m_downloads = metrics.counter("downloads", "blob downloads", ["result"])
        self.verifier = BlobVerifier(reactor, store.cas, metrics, verify_on_serve)
        self.verifier.on_corrupt(self._drop_torrent)

    # -- hooks the scheduler calls ------------------------------------------------------------------
    @inlineCallbacks
    def seed(self, namespace: str, d: Digest, info_hash: bytes) -> Any:
        mi = self.store.metainfo(d)
        if mi is None or mi.info_hash != info_hash:
            return None
        ok = yield self.verifier.check(d)
        return self._seed_torrent(mi) if ok else None

    def _seed_torrent(self, mi: MetaInfo) -> Torrent | None:
        return self.store.seed(mi, self._seed_corrupt if self.verifier.enabled else None)

    def _seed_corrupt(self, torrent: Torrent) -> None:
        """A piece we seed failed its hash: quarantine the copy; the next request downloads it.

        Not from inside the read that found it: dropping the torrent closes that connection.
        """
        self.reactor.callLater(
            0, self.verifier.found_corrupt, torrent.digest, "a piece failed its hash while seeding"
        )

    def _drop_torrent(self, d: Digest) -> None:
        if self.scheduler is None:
            return
        for ctl in self.scheduler.controls_of(d):
            if ctl.finished:
                self.scheduler.remove(ctl.info_hash, RuntimeError(f"{d} is corrupt here"))

    @inlineCallbacks
    def commit(self, ctl: TorrentControl) -> Any:
        """Check the whole download against its digest, then move it into the cache.

        Most of the file was hashed while it arrived; the rest is hashed in a thread.
        """
        torrent = ctl.torrent
        assert isinstance(torrent, DownloadTorrent)
        actual = yield deferToThreadPool(self.reactor, self.reactor.getThreadPool(), torrent.finish_blob_hash)
        if actual != torrent.digest:
            self.store.delete(torrent.digest)
            raise ValueError(f"assembled blob hashes to {actual}, not {torrent.digest}")
        self.store.commit_verified(torrent)
        seed = self._seed_torrent(torrent.mi)
        assert seed is not None
        return seed

    # -- public -------------------------------------------------------------------------------------
    def local_path(self, d: Digest) -> str | None:
        if self.store.cas.has(d):
            self.store.cas.touch(d)
            return str(self.store.cas.blob_path(d))
        return None

    @inlineCallbacks
    def fetch(self, namespace: str, digest: str) -> Any:
        """Local path of the complete verified blob, downloading it through P2P if needed."""
        d = Digest.parse_loose(digest)
        ok = yield self.verifier.check(d)
        path = self.local_path(d) if ok else None
        if path is not None:
            return path
        assert self.scheduler is not None
        waiter: Deferred[Any] = Deferred()
        if d.hex in self.starting:
            self.starting[d.hex].append(waiter)
        else:
            self.starting[d.hex] = [waiter]
            self._start(namespace, d).addBoth(self._started, d.hex)
        ctl = yield waiter
        if ctl is None:
            return self.local_path(d)
        try:
            yield self.scheduler.wait(ctl)
        except Exception:
            self.m_downloads.labels("failed").inc()
            raise
        self.m_downloads.labels("ok").inc()
        path = self.local_path(d)
        if path is None:
            raise RuntimeError(f"{d} finished but is not in the cache")
        return path

    def _started(self, result: Any, key: str) -> None:
        for waiter in self.starting.pop(key, []):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    @inlineCallbacks
    def _start(self, namespace: str, d: Digest) -> Any:
        assert self.scheduler is not None
        for ctl in self.scheduler.controls_of(d):
            return ctl
        mi = yield self.tracker.metainfo(namespace, d)
        if self.store.cas.has(d):
            return None
        torrent = self.store.open_download(mi)
        if torrent.have.count():
            bad = yield deferToThreadPool(self.reactor, self.reactor.getThreadPool(), torrent.recheck)
            if bad:
                log.warn("resuming {d}: {n} pieces on disk failed their hash and are fetched again",
                         d=d, n=len(bad))
            log.info("resuming {d}: {n} of {t} pieces on disk", d=d, n=torrent.have.count(), t=mi.num_pieces)
        return self.scheduler.add_download(torrent, namespace)

    def busy(self, d: Digest) -> bool:
        """Whether eviction must keep *d*: being downloaded, or seeded to a peer right now."""
        if d.hex in self.starting:
            return True
        controls = self.scheduler.controls_of(d) if self.scheduler is not None else []
        return any(not ctl.finished or ctl.conns or ctl.dialing for ctl in controls)

    def let_go(self, d: Digest) -> None:
        """Stop seeding *d* (it is about to be evicted)."""
        if self.scheduler is not None:
            for ctl in self.scheduler.controls_of(d):
                self.scheduler.remove(ctl.info_hash, RuntimeError(f"{d} evicted"))

    def delete(self, d: Digest) -> bool:
        assert self.scheduler is not None
        for ctl in self.scheduler.controls_of(d):
            self.scheduler.remove(ctl.info_hash, RuntimeError("deleted"))
        existed = self.store.cas.has(d)
        self.store.delete(d)
        return existed
