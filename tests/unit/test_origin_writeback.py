"""Durable write-back on a Clock: tasks in the journal, capped exponential backoff, resume after restart."""

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
from kraken.core.journal import Journal, read_rows
from kraken.core.metrics import Metrics
from kraken.origin.writeback import WriteBackQueue


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

    def delete(self, namespace: str, name: str) -> Deferred[None]:
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
    journal = Journal(cas.root / "journal.sqlite", clock, metrics)
    return WriteBackQueue(journal, cas, router, retry_first=1.0, retry_cap=8.0,
                          legacy_markers=cas.root / "writeback")


def _rows(cas: CAStore) -> list[tuple[str, dict[str, str]]]:
    return [(r.key, r.payload) for r in read_rows(cas.root / "journal.sqlite")]


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(metrics.prefix + name, labels or None)
    return value or 0.0


def test_retries_back_off_then_the_task_goes_on_success(tmp_path: Path) -> None:
    clock, cas, backend, metrics, d = _setup(tmp_path, failures=5, name="wb1")
    queue = _queue(clock, cas, backend, metrics)
    queue.add("team/ns", d)
    task = [(f"{d.hex}/team/ns", {"namespace": "team/ns", "digest": str(d)})]
    assert _rows(cas) == task
    assert queue.pending() == {("team/ns", d.hex)} and queue.holds(d)
    assert _sample(metrics, "queue_depth", queue="writeback") == 1
    # Failures 1..5 wait 1, 2, 4, 8, 8 seconds: nothing happens a moment before each deadline.
    for wait in (1.0, 2.0, 4.0, 8.0):
        clock.advance(wait - 0.01)
        assert backend.uploads == [] and _rows(cas) == task
        clock.advance(0.01)
    assert _sample(metrics, "queue_failures_total", queue="writeback") == 5  # the 5th failure: stat at t=15
    assert _sample(metrics, "queue_oldest_age_seconds", queue="writeback") == 15
    clock.advance(7.99)
    assert backend.uploads == [] and _rows(cas) == task
    clock.advance(0.01)
    assert backend.uploads == [d.hex]
    assert (backend.root / d.hex).read_bytes() == cas.blob_path(d).read_bytes()
    assert _rows(cas) == [] and queue.pending() == set() and not queue.holds(d)
    assert _sample(metrics, "queue_depth", queue="writeback") == 0
    assert _sample(metrics, "queue_done_total", queue="writeback", result="ok") == 1
    assert clock.getDelayedCalls() == []


def test_tasks_survive_a_restart_and_are_resumed(tmp_path: Path) -> None:
    clock, cas, backend, metrics, d = _setup(tmp_path, failures=1000, name="wb2")
    first = _queue(clock, cas, backend, metrics)
    first.add("ns", d)
    first.add("ns", d)  # one write-back per (namespace, digest)
    clock.advance(3.0)
    first.stop()  # the origin shuts down with the backend still failing
    assert clock.getDelayedCalls() == [] and backend.uploads == []
    assert len(_rows(cas)) == 1

    backend.failures = 0
    clock2, metrics2 = Clock(), Metrics("wb2b")
    second = _queue(clock2, cas, backend, metrics2)
    assert second.pending() == set()
    assert second.resume() == 1
    assert backend.uploads == [d.hex]
    assert _rows(cas) == []
    assert _sample(metrics2, "queue_done_total", queue="writeback", result="ok") == 1


def test_present_in_backend_and_markers_of_earlier_versions(tmp_path: Path) -> None:
    clock, cas, backend, metrics, d = _setup(tmp_path, failures=0, name="wb3")
    shutil.copyfile(cas.blob_path(d), backend.root / d.hex)
    queue = _queue(clock, cas, backend, metrics)
    queue.add("ns", d)
    assert backend.uploads == []
    assert _sample(metrics, "queue_done_total", queue="writeback", result="present") == 1
    (backend.root / d.hex).unlink()
    markers = cas.root / "writeback"
    markers.mkdir()
    (markers / f"{d.hex}.0123.json").write_text(f'{{"namespace": "old", "digest": "{d}"}}')
    garbage = markers / "junk.json"
    garbage.write_bytes(b"{not json")
    queue.resume()
    assert backend.uploads == [d.hex] and _rows(cas) == []
    assert sorted(p.name for p in markers.iterdir()) == ["junk.bad"]  # kept for a person to look at


def test_cleanup_keeps_blobs_awaiting_write_back(tmp_path: Path) -> None:
    clock, cas, backend, metrics, d = _setup(tmp_path, failures=1000, name="wb4")
    queue = _queue(clock, cas, backend, metrics)
    queue.add("ns", d)
    later = cas.blob_path(d).stat().st_atime + 100
    assert cas.cleanup(tti=10, now=later, keep=queue.holds) == [] and cas.has(d)
    backend.failures = 0
    queue.queue.retry_now()
    assert backend.uploads == [d.hex]
    assert cas.cleanup(tti=10, now=later, keep=queue.holds) == [d]


def test_a_deleted_blob_s_write_back_is_forgotten(tmp_path: Path) -> None:
    clock, cas, backend, metrics, d = _setup(tmp_path, failures=100, name="wb-cancel")
    queue = _queue(clock, cas, backend, metrics)
    queue.add("team/ns", d)
    assert _rows(cas) != [] and queue.holds(d)
    queue.cancel("team/ns", d)
    assert _rows(cas) == [] and not queue.holds(d) and queue.pending() == set()
    clock.advance(60)  # no retry is left to run
    assert backend.uploads == []
    queue.cancel("team/ns", d)  # nothing pending: a no-op
