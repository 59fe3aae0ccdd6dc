"""Write-back of uploads to their namespace's backend, durable across restarts.

Each pending write-back is a marker file ``<directory>/<digest hex>.<namespace hash>.json``
holding ``{"namespace": ..., "digest": ...}``. The marker is written atomically (and synced)
before the upload is acknowledged, removed only once the backend holds the blob, and every
marker found at start-up is resumed. Failures retry with capped exponential backoff on the
injected clock.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from kraken.backends.base import BackendRouter, BlobNotFound
from kraken.core.cas import CAStore, write_atomically
from kraken.core.digest import Digest
from kraken.core.metrics import Metrics
from kraken.core.verify import BlobVerifier

log = Logger(namespace="kraken.origin.writeback")


def backoff(attempt: int, first: float, cap: float) -> float:
    """Seconds to wait after the *attempt*-th failure (1-based): first, 2*first, 4*first ... at most cap."""
    return min(cap, first * 2 ** min(attempt - 1, 62))


def marker_name(namespace: str, d: Digest) -> str:
    return f"{d.hex}.{hashlib.sha256(namespace.encode()).hexdigest()[:16]}.json"


class WriteBackQueue:
    """Pending write-backs: a marker file each under *directory*, one retry loop each in memory."""

    def __init__(
        self,
        clock: IReactorTime,
        directory: str | os.PathLike[str],
        cas: CAStore,
        backends: BackendRouter,
        metrics: Metrics,
        retry_first: float = 1.0,
        retry_cap: float = 300.0,
        verifier: BlobVerifier | None = None,
    ) -> None:
        self.clock = clock
        self.verifier = verifier  # checks the local copy before it goes to the backend
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cas = cas
        self.backends = backends
        self.retry_first = retry_first
        self.retry_cap = retry_cap
        self.running: set[tuple[str, str]] = set()
        self.waiting: dict[tuple[str, str], Deferred[Any]] = {}
        self.m_pending = metrics.gauge("writebacks_pending", "uploads not yet written to a backend")
        self.m_done = metrics.counter("writebacks", "write-back attempts by result", ["result"])
        self.m_corrupt = metrics.counter("corrupt_entries", "unreadable entries found on disk, by store",
                                         ["store"])

    def pending(self) -> set[tuple[str, str]]:
        """``(namespace, digest hex)`` of every write-back not yet confirmed by the backend."""
        return set(self.running)

    def holds(self, d: Digest) -> bool:
        """Whether a pending write-back needs the local copy of *d* (cleanup must keep it)."""
        return any(self.directory.glob(f"{d.hex}.*.json"))

    def add(self, namespace: str, d: Digest) -> None:
        """Record the write-back on disk (synced), then start it; no-op without a backend."""
        if self.backends.for_namespace(namespace) is None or (namespace, d.hex) in self.running:
            return
        record = json.dumps({"namespace": namespace, "digest": str(d)}).encode()
        write_atomically(self.directory / marker_name(namespace, d), record)
        self._start(namespace, d)

    def resume(self) -> int:
        """Start every write-back whose marker is on disk; returns how many started."""
        started = 0
        for path in sorted(self.directory.glob("*.json")):
            entry = self._read_marker(path)
            if entry is None:
                continue
            namespace, d = entry
            if self.backends.for_namespace(namespace) is None:
                log.warn("write-back of {digest} in {namespace!r} waits: no backend serves that namespace",
                         digest=d, namespace=namespace)
                continue
            if (namespace, d.hex) not in self.running:
                self._start(namespace, d)
                started += 1
        if started:
            log.info("resumed {n} pending write-backs", n=started)
        return started

    def stop(self) -> None:
        """Stop retrying (the markers stay for the next start)."""
        for waiting in list(self.waiting.values()):
            waiting.cancel()

    # -- internals ------------------------------------------------------------------------------
    def _read_marker(self, path: Path) -> tuple[str, Digest] | None:
        try:
            record = json.loads(path.read_bytes())
            namespace, d = record["namespace"], Digest.parse(record["digest"])
            if not isinstance(namespace, str) or path.name != marker_name(namespace, d):
                raise ValueError("marker name does not match its content")
        except (OSError, ValueError, KeyError, TypeError) as e:
            aside = path.with_suffix(".bad")
            os.replace(path, aside)
            self.m_corrupt.labels("writeback").inc()
            log.error("unreadable write-back marker moved to {aside}: {e}", aside=str(aside), e=e)
            return None
        return namespace, d

    def _start(self, namespace: str, d: Digest) -> None:
        self.running.add((namespace, d.hex))
        self.m_pending.set(len(self.running))
        self._run(namespace, d)

    @inlineCallbacks
    def _run(self, namespace: str, d: Digest) -> Any:
        key = (namespace, d.hex)
        attempt = 0
        try:
            while True:
                try:
                    result = yield self._attempt(namespace, d)
                    break
                except Exception as e:
                    attempt += 1
                    delay = backoff(attempt, self.retry_first, self.retry_cap)
                    self.m_done.labels("retry").inc()
                    log.warn("write-back of {digest} failed (attempt {attempt}), retrying in {delay}s: {e}",
                             digest=d, attempt=attempt, delay=delay, e=e)
                    self.waiting[key] = deferLater(self.clock, delay, lambda: None)
                    try:
                        yield self.waiting[key]
                    finally:
                        self.waiting.pop(key, None)
        except CancelledError:
            self.running.discard(key)
            self.m_pending.set(len(self.running))
            return
        (self.directory / marker_name(namespace, d)).unlink(missing_ok=True)
        self.running.discard(key)
        self.m_pending.set(len(self.running))
        self.m_done.labels(result).inc()
        if result == "lost":
            log.error("write-back of {digest} to {namespace!r} impossible: the local copy is gone",
                      digest=d, namespace=namespace)
        else:
            log.info("write-back of {digest} to {namespace!r}: {result}", digest=d, namespace=namespace,
                     result=result)

    @inlineCallbacks
    def _attempt(self, namespace: str, d: Digest) -> Any:
        backend = self.backends.for_namespace(namespace)
        if backend is None:
            raise RuntimeError(f"no backend serves namespace {namespace!r} any more")
        try:
            yield backend.stat(namespace, d.hex)
            return "present"
        except BlobNotFound:
            pass
        present = (yield self.verifier.check(d)) if self.verifier is not None else self.cas.has(d)
        if not present:
            return "lost"
        yield backend.upload(namespace, d.hex, str(self.cas.blob_path(d)))
        return "ok"


class WriteBackService(Service):
    """Resumes the write-backs left on disk when the server starts; stops retrying at shutdown."""

    def __init__(self, queue: WriteBackQueue) -> None:
        self.queue = queue

    def startService(self) -> None:
        super().startService()
        self.queue.resume()

    def stopService(self) -> Any:
        self.queue.stop()
        return super().stopService()
