"""Verified marks, quarantine and the serve-time check of stored blobs, on a Clock.

The worker thread a hash runs in is replaced by an inline pool, so every step is driven by
the test: the store's marks, :class:`BlobVerifier`, the P2P :class:`PieceGuard`, and what
the origin and the agent do when a copy turns out corrupt.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from kraken.agent.blobs import AgentBlobs
from kraken.backends.base import BackendRouter, BlobNotFound, NamespaceRoute
from kraken.core.cas import VERIFIED, CAStore, Verdict
from kraken.core.digest import Digest
from kraken.core.metrics import Metrics
from kraken.core.verify import BlobVerifier
from kraken.origin.blobs import OriginBlobs, State
from kraken.p2p.metainfo import generate
from kraken.p2p.storage import PieceStore, Torrent

PIECE = 64 * 1024


class InlinePool:
    """A thread pool that runs the work at once, in the caller's thread."""

    def callInThreadWithCallback(self, done: Callable[[bool, Any], None], f: Callable[..., Any],
                                 *args: Any, **kwargs: Any) -> None:
        try:
            result = f(*args, **kwargs)
        except BaseException:
            done(False, Failure())
        else:
            done(True, result)


class ThreadlessClock(Clock):
    def getThreadPool(self) -> InlinePool:
        return InlinePool()

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


def put(cas: CAStore, data: bytes) -> Digest:
    d = Digest.of_bytes(data)
    tmp = cas.temp_path()
    tmp.write_bytes(data)
    cas.ingest(tmp, d)
    return d


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def counted(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(metrics.prefix + name + "_total")
    return value or 0.0


# -- the store's marks ----------------------------------------------------------------------------
def test_a_stored_blob_is_marked_and_a_write_unmarks_it(tmp_path: Path) -> None:
    cas = CAStore(tmp_path)
    d = put(cas, os.urandom(100_000))
    assert cas.is_verified(d)
    assert cas.read_meta(d, VERIFIED) is not None
    cas.touch(d)  # a read keeps the mark
    assert cas.is_verified(d)
    assert CAStore(tmp_path).is_verified(d)  # the mark outlives the process
    flip(cas.blob_path(d), 500)
    assert not cas.is_verified(d)
    assert not CAStore(tmp_path).is_verified(d)


def test_a_write_in_the_same_second_as_the_mark_still_unmarks(tmp_path: Path) -> None:
    cas = CAStore(tmp_path)
    d = put(cas, b"x" * 4096)
    mark_mtime = cas.blob_path(d).stat().st_mtime_ns
    assert mark_mtime % 1_000_000_000 == 0 and mark_mtime <= time.time_ns() - 1_000_000_000
    # a file system with one-second timestamps stamps a later write with the current second
    with open(cas.blob_path(d), "r+b") as f:
        f.write(b"y")
    second = time.time_ns() // 1_000_000_000 * 1_000_000_000
    os.utime(cas.blob_path(d), ns=(second, second))
    assert not cas.is_verified(d)


def test_verify_marks_an_intact_copy_and_quarantines_a_corrupt_one(tmp_path: Path) -> None:
    cas = CAStore(tmp_path)
    intact = put(cas, b"intact" * 1000)
    os.utime(cas.blob_path(intact))  # a metadata change only: the bytes still match
    assert not cas.is_verified(intact)
    assert cas.verify(intact) is Verdict.OK and cas.is_verified(intact)

    bad = put(cas, b"bad" * 1000)
    flip(cas.blob_path(bad), 10)
    assert cas.verify(bad) is Verdict.CORRUPT
    assert not cas.has(bad)
    assert (tmp_path / "quarantine" / bad.hex / "data").read_bytes()[10:11] != b"d"
    assert cas.verify(bad) is Verdict.MISSING
    assert [e.digest for e in cas.entries()] == [intact]

    again = put(cas, b"bad" * 1000)  # the good bytes arrive again
    assert again == bad and cas.is_verified(bad)
    flip(cas.blob_path(bad), 20)
    cas.verify(bad)  # a second quarantine replaces the first
    assert len(list((tmp_path / "quarantine").iterdir())) == 1


def test_only_hashed_ingests_are_marked(tmp_path: Path) -> None:
    cas = CAStore(tmp_path)
    data = b"adopted"
    tmp = cas.temp_path()
    tmp.write_bytes(data)
    d = Digest.of_bytes(data)
    cas.ingest(tmp, d, verify=False)
    assert cas.has(d) and not cas.is_verified(d)
    tmp = cas.temp_path()
    tmp.write_bytes(b"checked")
    checked = Digest.of_bytes(b"checked")
    cas.ingest(tmp, checked, verify=False, checked=True)
    assert cas.is_verified(checked)


# -- BlobVerifier ---------------------------------------------------------------------------------
class ManualRun:
    """Holds each hash until the test releases it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.calls.append((f, args, d))
        return d

    def release(self) -> None:
        calls, self.calls = self.calls, []
        for f, args, d in calls:
            d.callback(f(*args))


def test_checks_of_a_changed_blob_share_one_hash_and_a_corrupt_copy_is_counted(tmp_path: Path) -> None:
    cas = CAStore(tmp_path)
    metrics = Metrics("verify1")
    run = ManualRun()
    verifier = BlobVerifier(Clock(), cas, metrics, run=run)
    told: list[Digest] = []
    verifier.on_corrupt(told.append)
    d = put(cas, os.urandom(50_000))
    assert verifier.check(d).result is True and not run.calls  # marked: no hash
    flip(cas.blob_path(d), 7)
    results: list[bool] = []
    for _ in range(3):
        verifier.check(d).addCallback(results.append)
    assert len(run.calls) == 1 and results == []
    run.release()
    assert results == [False, False, False]
    assert told == [d] and counted(metrics, "corrupt_blobs") == 1
    assert verifier.check(d).result is False and not run.calls  # gone: nothing to hash
    assert counted(metrics, "corrupt_blobs") == 1


def test_a_changed_but_intact_blob_is_served_after_one_hash(tmp_path: Path) -> None:
    cas = CAStore(tmp_path)
    metrics = Metrics("verify2")
    run = ManualRun()
    verifier = BlobVerifier(Clock(), cas, metrics, run=run)
    d = put(cas, os.urandom(50_000))
    os.utime(cas.blob_path(d))
    checked = verifier.check(d)
    run.release()
    assert checked.result is True
    assert verifier.check(d).result is True and not run.calls
    assert counted(metrics, "corrupt_blobs") == 0


def test_disabled_verification_trusts_the_store_and_a_failed_hash_serves_nothing(tmp_path: Path) -> None:
    cas = CAStore(tmp_path)
    d = put(cas, b"abc" * 100)
    flip(cas.blob_path(d), 1)
    trusting = BlobVerifier(Clock(), cas, Metrics("verify3"), enabled=False)
    assert trusting.check(d).result is True

    def broken(f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(_raise())

    async def _raise() -> None:
        raise OSError("I/O error")

    failing = BlobVerifier(Clock(), cas, Metrics("verify4"), run=broken)
    assert failing.check(d).result is False
    assert cas.has(d)  # an I/O error is no proof of corruption


# -- the P2P piece guard --------------------------------------------------------------------------
def seeded(tmp_path: Path, pieces: int = 4) -> tuple[PieceStore, Any, list[Torrent]]:
    store = PieceStore(CAStore(tmp_path))
    data = os.urandom(PIECE * pieces)
    d = put(store.cas, data)
    mi = generate(store.cas.blob_path(d), d, PIECE)
    return store, mi, []


def test_guard_passes_pieces_of_a_marked_blob_without_hashing(tmp_path: Path, monkeypatch: Any) -> None:
    store, mi, bad = seeded(tmp_path)
    torrent = store.seed(mi, bad.append)
    assert torrent is not None and torrent.guard is not None and torrent.guard.trusted
    import kraken.p2p.storage as storage

    monkeypatch.setattr(storage.hashlib, "sha256", None)  # any hash would fail the test
    assert len(torrent.read(2, 0, PIECE)) == PIECE
    assert len(torrent.read(2, 100, 10)) == 10
    assert bad == []


def test_guard_stops_at_the_first_piece_that_went_bad(tmp_path: Path) -> None:
    store, mi, bad = seeded(tmp_path)
    torrent = store.seed(mi, bad.append)
    assert torrent is not None
    assert len(torrent.read(0, 0, PIECE)) == PIECE
    flip(torrent.path, 2 * PIECE + 5)
    assert len(torrent.read(1, 0, PIECE)) == PIECE  # hashed now, and still good
    assert bad == []
    assert torrent.read(2, 0, PIECE) == b""
    assert bad == [torrent]
    assert torrent.read(0, 0, PIECE) == b"" and torrent.read(1, 10, 10) == b""  # nothing more
    assert bad == [torrent]


def test_guard_hashes_every_piece_of_an_unmarked_blob(tmp_path: Path) -> None:
    store, mi, bad = seeded(tmp_path)
    flip(store.cas.blob_path(mi.digest), 3 * PIECE)
    torrent = store.seed(mi, bad.append)
    assert torrent is not None and torrent.guard is not None and not torrent.guard.trusted
    assert [len(torrent.read(i, 0, PIECE)) for i in range(3)] == [PIECE] * 3
    assert torrent.read(3, 0, PIECE) == b"" and bad == [torrent]
    assert store.seed(mi) is not None and store.seed(mi).guard is None


# -- what the origin and the agent do -------------------------------------------------------------
class MemoryBackend:
    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs

    def stat(self, namespace: str, name: str) -> Deferred[int]:
        return succeed(len(self.blobs[name]))

    def download(self, namespace: str, name: str, dest_path: str) -> Deferred[None]:
        Path(dest_path).write_bytes(self.blobs[name])
        return succeed(None)


class Scheduled:
    def __init__(self, torrent: Torrent) -> None:
        self.torrent = torrent
        self.info_hash = torrent.info_hash
        self.finished = True


class FakeScheduler:
    def __init__(self) -> None:
        self.torrents: dict[bytes, Scheduled] = {}
        self.removed: list[bytes] = []

    def controls_of(self, d: Digest) -> list[Scheduled]:
        return [ctl for ctl in self.torrents.values() if ctl.torrent.digest == d]

    def remove(self, info_hash: bytes, reason: Exception | None = None) -> None:
        self.removed.append(info_hash)
        self.torrents.pop(info_hash, None)


def origin(
    tmp_path: Path, blobs: dict[str, bytes]
) -> tuple[OriginBlobs, ThreadlessClock, FakeScheduler, Metrics]:
    clock = ThreadlessClock()
    metrics = Metrics("origin")
    router = BackendRouter([NamespaceRoute(re.compile(".*"), MemoryBackend(blobs))])
    keeper = OriginBlobs(clock, CAStore(tmp_path), router, {0: PIECE}, metrics)
    seeds = FakeScheduler()
    keeper.scheduler = seeds
    return keeper, clock, seeds, metrics


def test_origin_fetches_a_corrupt_copy_again_from_its_backend(tmp_path: Path) -> None:
    data = os.urandom(3 * PIECE)
    d = Digest.of_bytes(data)
    keeper, _clock, seeds, metrics = origin(tmp_path, {d.hex: data})
    tmp = keeper.cas.temp_path()
    tmp.write_bytes(data)
    keeper.cas.ingest(tmp, d)
    mi = keeper.metainfo(d).result
    torrent = keeper.seed("ns", d, mi.info_hash).result
    assert isinstance(torrent, Torrent)
    seeds.torrents[mi.info_hash] = Scheduled(torrent)
    flip(keeper.cas.blob_path(d), 5)

    state = keeper.ensure("ns", d).result  # the fetch from the memory backend ends at once
    assert state is State.FETCHING
    assert seeds.removed == [mi.info_hash]
    assert keeper.cas.is_verified(d) and keeper.cas.blob_path(d).read_bytes() == data
    assert keeper.ensure("ns", d).result is State.READY
    assert counted(metrics, "corrupt_blobs") == 1


def test_origin_drops_a_seed_whose_piece_went_bad_and_fetches_it_again(tmp_path: Path) -> None:
    data = os.urandom(3 * PIECE)
    d = Digest.of_bytes(data)
    keeper, clock, seeds, metrics = origin(tmp_path, {d.hex: data})
    tmp = keeper.cas.temp_path()
    tmp.write_bytes(data)
    keeper.cas.ingest(tmp, d)
    mi = keeper.metainfo(d).result
    torrent = keeper.seed("ns", d, mi.info_hash).result
    seeds.torrents[mi.info_hash] = Scheduled(torrent)
    flip(torrent.path, PIECE + 1)
    assert torrent.read(1, 0, PIECE) == b""
    assert seeds.removed == []  # not from inside the read
    clock.advance(0)
    assert seeds.removed == [mi.info_hash]
    assert counted(metrics, "corrupt_blobs") == 1
    assert keeper.cas.blob_path(d).read_bytes() == data and keeper.cas.is_verified(d)


def test_agent_drops_the_seed_of_a_corrupt_copy_before_downloading_again(tmp_path: Path) -> None:
    clock = ThreadlessClock()
    metrics = Metrics("agent")
    store = PieceStore(CAStore(tmp_path))
    blobs = AgentBlobs(clock, store, tracker=None, metrics=metrics)
    data = os.urandom(2 * PIECE)
    d = put(store.cas, data)
    mi = generate(store.cas.blob_path(d), d, PIECE)
    store.cas.write_meta(d, "metainfo", mi.to_json())
    torrent = blobs.seed("ns", d, mi.info_hash).result
    scheduler = FakeScheduler()
    scheduler.torrents[mi.info_hash] = Scheduled(torrent)
    blobs.scheduler = scheduler
    assert blobs.fetch("ns", str(d)).result == str(store.cas.blob_path(d))

    flip(store.cas.blob_path(d), 3)
    assert blobs.seed("ns", d, mi.info_hash).result is None
    assert scheduler.removed == [mi.info_hash]
    assert counted(metrics, "corrupt_blobs") == 1


class FakeReplica:
    def __init__(self, base: str, data: bytes | None) -> None:
        self.base = base
        self.data = data
        self.asked: list[bool] = []

    def download(self, namespace: str, digest: Digest, dest_path: str, local: bool = False) -> Deferred[Any]:
        self.asked.append(local)
        if self.data is None:
            return fail(BlobNotFound(str(digest)))
        Path(dest_path).write_bytes(self.data)
        return succeed(None)


def test_origin_without_backend_repairs_from_the_first_owner_with_good_bytes(tmp_path: Path) -> None:
    data = os.urandom(2 * PIECE)
    d = Digest.of_bytes(data)
    clock = ThreadlessClock()
    metrics = Metrics("origin-replicas")
    keeper = OriginBlobs(clock, CAStore(tmp_path), BackendRouter([]), {0: PIECE}, metrics)
    rotten, gone, good = data[:-1] + b"?", None, data
    replicas = [FakeReplica("rotten:1", rotten), FakeReplica("gone:2", gone), FakeReplica("ok:3", good)]
    keeper.replicas = lambda digest: replicas
    tmp = keeper.cas.temp_path()
    tmp.write_bytes(data)
    keeper.cas.ingest(tmp, d)
    flip(keeper.cas.blob_path(d), 9)

    assert keeper.ensure("ns", d).result is State.FETCHING
    assert [r.asked for r in replicas] == [[True], [True], [True]]  # local only: no fetch chains
    assert keeper.cas.blob_path(d).read_bytes() == data and keeper.cas.is_verified(d)
    assert keeper.ensure("ns", d).result is State.READY
    assert counted(metrics, "corrupt_blobs") == 1


def test_origin_without_backend_or_good_owner_answers_unknown(tmp_path: Path) -> None:
    data = os.urandom(PIECE)
    d = Digest.of_bytes(data)
    metrics = Metrics("origin-no-owner")
    keeper = OriginBlobs(ThreadlessClock(), CAStore(tmp_path), BackendRouter([]), {0: PIECE}, metrics)
    keeper.replicas = lambda digest: [FakeReplica("gone:2", None)]
    tmp = keeper.cas.temp_path()
    tmp.write_bytes(data)
    keeper.cas.ingest(tmp, d)
    flip(keeper.cas.blob_path(d), 1)
    assert keeper.ensure("ns", d).result is State.FETCHING
    failure = keeper.ensure("ns", d)
    assert isinstance(failure.result, Failure) and failure.result.check(BlobNotFound)
    failure.addErrback(lambda f: None)


def test_a_hashed_copy_replaces_a_stored_one_that_changed(tmp_path: Path) -> None:
    cas = CAStore(tmp_path)
    data = os.urandom(10_000)
    d = put(cas, data)
    flip(cas.blob_path(d), 3)
    tmp = cas.temp_path()
    tmp.write_bytes(data)
    cas.ingest(tmp, d, verify=False)  # not hashed here: the stored copy stays
    assert cas.blob_path(d).read_bytes() != data
    tmp.write_bytes(data)
    cas.ingest(tmp, d, verify=False, checked=True)
    assert cas.blob_path(d).read_bytes() == data and cas.is_verified(d)
    assert not tmp.exists()


def test_marks_in_memory_are_bounded(tmp_path: Path, monkeypatch: Any) -> None:
    import kraken.core.cas as cas_module

    monkeypatch.setattr(cas_module, "MARKS_IN_MEMORY", 2)
    cas = CAStore(tmp_path)
    blobs = [put(cas, bytes([i]) * 100) for i in range(4)]
    assert len(cas.marks) == 2
    assert all(cas.is_verified(d) for d in blobs)  # the others come back from their sidecars
    assert len(cas.marks) == 2


def test_a_resumed_download_forgets_pieces_that_changed_on_disk(tmp_path: Path) -> None:
    source = PieceStore(CAStore(tmp_path / "source"))
    data = os.urandom(4 * PIECE)
    d = put(source.cas, data)
    mi = generate(source.cas.blob_path(d), d, PIECE)
    store = PieceStore(CAStore(tmp_path / "agent"))
    download = store.open_download(mi)
    for index in range(3):
        writer = download.begin_piece(index)
        assert writer is not None
        writer.write(data[index * PIECE:(index + 1) * PIECE])
        assert writer.finish() is True
    download.close()
    flip(download.path, PIECE + 7)  # piece 1 rots while the agent is down

    resumed = store.open_download(mi)
    assert resumed.have.indices() == [0, 1, 2]
    assert resumed.recheck() == [1]
    assert resumed.have.indices() == [0, 2]
    resumed.close()
    assert store.open_download(mi).have.indices() == [0, 2]  # status on disk says so too
