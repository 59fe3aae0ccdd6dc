"""Durable write-back on a Clock: markers on disk, capped exponential backoff, resume after restart."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from kraken.backends.base import BackendError, BackendRouter, BlobNotFound, NamespaceRoute
from kraken.core.cas import CAStore
from kraken.core.digest import Digest
from kraken.core.metrics import Metrics
from kraken.origin.writeback import WriteBackQueue, backoff


class SyncDirectoryBackend:
    """Blobs as files in a directory, answered at once; the next ``failures`` calls fail."""

    def __init__(self, root: Path, failures: int = 0) -> None:
        self.root = root
        self.failures = failures
        self.uploads: list[str] = []

    def _broken(self) -> bool:
        if self.failures > 0:
            self.failures -= 1
            return True
        return False

    def stat(self, namespace: str, name: str) -> Deferred[int]:
        if self._broken():
            return fail(BackendError("backend down"))
        path = self.root / name
        return succeed(path.stat().st_size) if path.is_file() else fail(BlobNotFound(name))

    def upload(self, namespace: str, name: str, src_path: str) -> Deferred[None]:
        if self._broken():
            return fail(BackendError("backend down"))
        shutil.copyfile(src_path, self.root / name)
        self.uploads.append(name)
        return succeed(None)

    def download(self, namespace: str, name: str, dest_path: str) -> Deferred[None]:
        raise NotImplementedError

    def list(self, prefix: str) -> Deferred[list[str]]:
        raise NotImplementedError


Setup = tuple[Clock, CAStore, SyncDirectoryBackend, Metrics, Digest]


def _setup(tmp_path: Path, failures: int, name: str) -> Setup:
    (tmp_path / "backend").mkdir(exist_ok=True)
    backend = SyncDirectoryBackend(tmp_path / "backend", failures)
    cas = CAStore(tmp_path / "store")
    data = os.urandom(1000)
    d = Digest.of_bytes(data)
    uid = cas.start_upload()
    cas.upload_path(uid).write_bytes(data)
    cas.commit_upload(uid, d)
    return Clock(), cas, backend, Metrics(name), d


def _queue(clock: Clock, cas: CAStore, backend: SyncDirectoryBackend, metrics: Metrics) -> WriteBackQueue:
    router = BackendRouter([NamespaceRoute(re.compile(".*"), backend)])
    return WriteBackQueue(clock, cas.root / "writeback", cas, router, metrics, retry_first=1.0, retry_cap=8.0)


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(metrics.prefix + name, labels or None)
    return value or 0.0


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, 1.0, 8.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff(10_000, 0.5, 60.0) == 60.0


def test_retries_back_off_then_marker_goes_on_success(tmp_path: Path) -> None:
    clock, cas, backend, metrics, d = _setup(tmp_path, failures=5, name="wb1")
    queue = _queue(clock, cas, backend, metrics)
    queue.add("team/ns", d)
    markers = list((cas.root / "writeback").glob("*.json"))
    assert len(markers) == 1 and b'"team/ns"' in markers[0].read_bytes()
    assert queue.pending() == {("team/ns", d.hex)} and queue.holds(d)
    assert _sample(metrics, "writebacks_pending") == 1
    # Failures 1..5 wait 1, 2, 4, 8, 8 seconds: nothing happens a moment before each deadline.
    for wait in (1.0, 2.0, 4.0, 8.0):
        clock.advance(wait - 0.01)
        assert backend.uploads == [] and markers[0].exists()
        clock.advance(0.01)
    assert _sample(metrics, "writebacks_total", result="retry") == 5  # the 5th failure: stat at t=15
    clock.advance(7.99)
    assert backend.uploads == [] and markers[0].exists()
    clock.advance(0.01)
    assert backend.uploads == [d.hex]
    assert (backend.root / d.hex).read_bytes() == cas.blob_path(d).read_bytes()
    assert not markers[0].exists() and queue.pending() == set() and not queue.holds(d)
    assert _sample(metrics, "writebacks_pending") == 0
    assert _sample(metrics, "writebacks_total", result="ok") == 1
    assert clock.getDelayedCalls() == []


def test_markers_survive_a_restart_and_are_resumed(tmp_path: Path) -> None:
    clock, cas, backend, metrics, d = _setup(tmp_path, failures=1000, name="wb2")
    first = _queue(clock, cas, backend, metrics)
    first.add("ns", d)
    first.add("ns", d)  # one write-back per (namespace, digest)
    clock.advance(3.0)
    first.stop()  # the origin shuts down with the backend still failing
    assert clock.getDelayedCalls() == [] and backend.uploads == []
    assert len(list((cas.root / "writeback").glob("*.json"))) == 1

    backend.failures = 0
    clock2, metrics2 = Clock(), Metrics("wb2b")
    second = _queue(clock2, cas, backend, metrics2)
    assert second.pending() == set()
    assert second.resume() == 1
    assert backend.uploads == [d.hex]
    assert list((cas.root / "writeback").glob("*.json")) == []
    assert _sample(metrics2, "writebacks_total", result="ok") == 1


def test_present_in_backend_and_unreadable_markers(tmp_path: Path) -> None:
    clock, cas, backend, metrics, d = _setup(tmp_path, failures=0, name="wb3")
    shutil.copyfile(cas.blob_path(d), backend.root / d.hex)
    queue = _queue(clock, cas, backend, metrics)
    queue.add("ns", d)
    assert backend.uploads == [] and _sample(metrics, "writebacks_total", result="present") == 1
    garbage = cas.root / "writeback" / "junk.json"
    garbage.write_bytes(b"{not json")
    assert queue.resume() == 0
    assert not garbage.exists() and garbage.with_suffix(".bad").exists()  # kept for a person to look at


def test_cleanup_keeps_blobs_awaiting_write_back(tmp_path: Path) -> None:
    clock, cas, backend, metrics, d = _setup(tmp_path, failures=1000, name="wb4")
    queue = _queue(clock, cas, backend, metrics)
    queue.add("ns", d)
    later = cas.blob_path(d).stat().st_atime + 100
    assert cas.cleanup(tti=10, now=later, keep=queue.holds) == [] and cas.has(d)
    queue.stop()
    marker = next((cas.root / "writeback").glob("*.json"))
    marker.unlink()
    assert cas.cleanup(tti=10, now=later, keep=queue.holds) == [d]
