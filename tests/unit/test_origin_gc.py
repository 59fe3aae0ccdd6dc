"""The origin's sweep on a Clock: marked and recent blobs stay, the rest go from store and backend."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from kraken.backends.base import BackendEntry, BackendRouter, BlobNotFound, NamespaceRoute
from kraken.core.cas import CAStore
from kraken.core.digest import Digest
from kraken.core.metrics import Metrics
from kraken.origin.blobs import OriginBlobs
from kraken.origin.gc import OriginSweeper, SweepReport

HOUR = 3600.0


class DirectoryBackend:
    """Blobs as files in a directory, answered at once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(exist_ok=True)

    def stat(self, namespace: str, name: str) -> Deferred[int]:
        path = self.root / name
        return succeed(path.stat().st_size) if path.is_file() else fail(BlobNotFound(name))

    def download(self, namespace: str, name: str, dest_path: str) -> Deferred[None]:
        raise NotImplementedError

    def upload(self, namespace: str, name: str, src_path: str) -> Deferred[None]:
        raise NotImplementedError

    def list(self, prefix: str) -> Deferred[list[str]]:
        return succeed(sorted(p.name for p in self.root.iterdir() if p.name.startswith(prefix)))

    def delete(self, namespace: str, name: str) -> Deferred[None]:
        path = self.root / name
        if not path.is_file():
            return fail(BlobNotFound(name))
        path.unlink()
        return succeed(None)

    def entries(self, prefix: str) -> Deferred[list[BackendEntry]]:
        return succeed([BackendEntry(p.name, p.stat().st_size, p.stat().st_mtime)
                        for p in sorted(self.root.iterdir()) if p.name.startswith(prefix)])


def _store(cas: CAStore, data: bytes, age: float) -> Digest:
    d = Digest.of_bytes(data)
    uid = cas.start_upload()
    cas.upload_path(uid).write_bytes(data)
    path = cas.commit_upload(uid, d)
    then = time.time() - age
    os.utime(path, (then, then))
    return d


def _in_backend(backend: DirectoryBackend, d: Digest, data: bytes, age: float) -> None:
    path = backend.root / d.hex
    path.write_bytes(data)
    then = time.time() - age
    os.utime(path, (then, then))


Setup = tuple[Clock, CAStore, DirectoryBackend, OriginSweeper]


def _setup(tmp_path: Path, first_owner: bool = True) -> Setup:
    clock = Clock()
    clock.advance(time.time())
    cas = CAStore(tmp_path / "store")
    backend = DirectoryBackend(tmp_path / "backend")
    router = BackendRouter([NamespaceRoute(re.compile(".*"), backend)])
    blobs = OriginBlobs(clock, cas, router, {0: 1 << 20}, Metrics(f"gc{id(clock)}"))
    sweeper = OriginSweeper(blobs, lambda d: first_owner, lambda: ["me:1"], clock, Metrics(f"sw{id(clock)}"))
    return clock, cas, backend, sweeper


def _swept(report: SweepReport) -> set[tuple[str, str]]:
    return {(s["digest"].split(":")[1], s["where"]) for s in report.swept}


def _run(sweeper: OriginSweeper, live: set[str], grace: float, dry_run: bool) -> SweepReport:
    out: list[Any] = []
    sweeper.sweep(live, grace, dry_run).addBoth(out.append)
    assert isinstance(out[0], SweepReport), out
    return out[0]


def test_unmarked_old_blobs_go_marked_and_recent_ones_stay(tmp_path: Path) -> None:
    clock, cas, backend, sweeper = _setup(tmp_path)
    live = _store(cas, b"live" * 100, 2 * HOUR)
    old = _store(cas, b"old" * 100, 2 * HOUR)
    recent = _store(cas, b"recent" * 100, 60)
    asked = _store(cas, b"asked" * 100, 2 * HOUR)
    only_backend = Digest.of_bytes(b"backend only")
    for d, data in ((live, b"live" * 100), (old, b"old" * 100)):
        _in_backend(backend, d, data, 2 * HOUR)
    _in_backend(backend, only_backend, b"backend only", 2 * HOUR)
    (backend.root / "team:app:v1").write_text("a tag kept in the same bucket")
    os.utime(backend.root / "team:app:v1", (0, 0))
    sweeper.asked_for(asked)  # a push relies on it

    dry = _run(sweeper, {live.hex}, HOUR, dry_run=True)
    assert _swept(dry) == {(old.hex, "store"), (old.hex, "backend"), (only_backend.hex, "backend")}
    assert dry.kept_recent == 2 and cas.has(old) and (backend.root / old.hex).exists()

    report = _run(sweeper, {live.hex}, HOUR, dry_run=False)
    assert _swept(report) == _swept(dry) and report.reclaimed_bytes == {"store": 300, "backend": 312}
    assert not cas.has(old) and not (backend.root / old.hex).exists()
    assert not (backend.root / only_backend.hex).exists()
    assert all(cas.has(d) for d in (live, recent, asked)) and (backend.root / "team:app:v1").exists()

    # once the grace period is over, the untagged ones go too
    clock.advance(2 * HOUR)
    later = _run(sweeper, {live.hex}, HOUR, dry_run=False)
    assert _swept(later) == {(recent.hex, "store"), (asked.hex, "store")}
    assert cas.has(live) and (backend.root / live.hex).exists()


def test_backend_objects_are_swept_only_by_their_first_owner(tmp_path: Path) -> None:
    _, _, backend, sweeper = _setup(tmp_path, first_owner=False)
    d = Digest.of_bytes(b"not mine")
    _in_backend(backend, d, b"not mine", 2 * HOUR)
    assert _swept(_run(sweeper, set(), HOUR, dry_run=False)) == set()
    assert (backend.root / d.hex).exists()


def test_a_large_store_is_swept_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kraken.origin.gc

    monkeypatch.setattr(kraken.origin.gc, "BATCH", 2)
    clock, cas, _, sweeper = _setup(tmp_path)
    for i in range(5):
        _store(cas, b"blob %d" % i, 2 * HOUR)
    out: list[Any] = []
    sweeper.sweep(set(), HOUR, dry_run=False).addBoth(out.append)
    assert out == [] and sweeper.running  # the reactor gets a turn between batches
    for _ in range(3):
        clock.advance(0)
    assert isinstance(out[0], SweepReport) and out[0].swept_count == 5 and not sweeper.running
