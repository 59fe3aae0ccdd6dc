"""Write-back of uploads to their namespace's backend, durable across restarts.

Each pending write-back is a task ``<digest hex>/<namespace>`` of the ``writeback`` queue of
the origin's journal (:mod:`kraken.core.journal`): committed before the upload is
acknowledged, removed only once the backend holds the blob, resumed at every start, retried
with capped exponential backoff for as long as the backend refuses it. The attempt is
idempotent: a backend that already has the blob ends the task (``present``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from kraken.backends.base import BackendRouter, BlobNotFound
from kraken.core.cas import CAStore
from kraken.core.digest import Digest
from kraken.core.journal import DurableQueue, Journal, backoff, import_markers
from kraken.core.verify import BlobVerifier

log = Logger(namespace="kraken.origin.writeback")

__all__ = ["WriteBackQueue", "WriteBackService", "backoff"]
QUEUE = "writeback"


def task_key(namespace: str, d: Digest) -> str:
    return f"{d.hex}/{namespace}"


class WriteBackQueue:
    """Pending write-backs of one origin: the ``writeback`` queue of its journal."""

    def __init__(
        self,
        journal: Journal,
        cas: CAStore,
        backends: BackendRouter,
        retry_first: float = 1.0,
        retry_cap: float = 300.0,
        verifier: BlobVerifier | None = None,
        legacy_markers: Path | None = None,
    ) -> None:
        self.verifier = verifier  # checks the local copy before it goes to the backend
        self.cas = cas
        self.backends = backends
        self.legacy_markers = legacy_markers
        self.queue: DurableQueue = journal.queue(
            QUEUE, self._attempt, retry_first, retry_cap, group=lambda p: Digest.parse(p["digest"]).hex
        )
        self.queue.on_done.append(self._done)

    def pending(self) -> set[tuple[str, str]]:
        """``(namespace, digest hex)`` of every write-back not yet confirmed by the backend."""
        return {(p["namespace"], Digest.parse(p["digest"]).hex) for p in self.queue.payloads()}

    def holds(self, d: Digest) -> bool:
        """Whether a pending write-back needs the local copy of *d* (eviction must keep it)."""
        return self.queue.holds_group(d.hex)

    def add(self, namespace: str, d: Digest) -> None:
        """Commit the write-back to the journal, then start it; no-op without a backend."""
        if self.backends.for_namespace(namespace) is None or task_key(namespace, d) in self.queue:
            return
        self.queue.add(task_key(namespace, d), {"namespace": namespace, "digest": str(d)})

    def cancel(self, namespace: str, d: Digest) -> None:
        """Forget a pending write-back of *d* (the blob is being deleted), in the journal too."""
        self.queue.remove(task_key(namespace, d))

    def resume(self) -> int:
        """Start every write-back the journal holds (and the marker files of earlier versions)."""
        if self.legacy_markers is not None:
            import_markers(self.legacy_markers, self.queue, _legacy_task)
        return self.queue.resume(self._servable)

    def stop(self) -> None:
        """Stop retrying (the tasks stay in the journal for the next start)."""
        self.queue.stop()

    # -- internals ------------------------------------------------------------------------------
    def _servable(self, payload: dict[str, Any]) -> bool:
        namespace = payload.get("namespace")
        if self.backends.for_namespace(str(namespace)) is None:
            log.warn("write-back of {digest} in {namespace!r} waits: no backend serves that namespace",
                     digest=payload.get("digest"), namespace=namespace)
            return False
        return True

    def _done(self, key: str, payload: dict[str, Any], result: str) -> None:
        if result == "lost":
            log.error("write-back of {digest} to {namespace!r} impossible: the local copy is gone",
                      digest=payload["digest"], namespace=payload["namespace"])
        else:
            log.info("write-back of {digest} to {namespace!r}: {result}", digest=payload["digest"],
                     namespace=payload["namespace"], result=result)

    @inlineCallbacks
    def _attempt(self, payload: dict[str, Any]) -> Any:
        namespace, d = payload["namespace"], Digest.parse(payload["digest"])
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


def _legacy_task(record: dict[str, Any], path: Path) -> list[tuple[str, dict[str, Any]]]:
    namespace, d = record["namespace"], Digest.parse(record["digest"])
    if not isinstance(namespace, str):
        raise ValueError("namespace is not a string")
    return [(task_key(namespace, d), {"namespace": namespace, "digest": str(d)})]


class WriteBackService(Service):
    """Resumes the write-backs left in the journal when the server starts; stops retrying at shutdown."""

    def __init__(self, queue: WriteBackQueue) -> None:
        self.queue = queue

    def startService(self) -> None:
        super().startService()
        self.queue.resume()

    def stopService(self) -> Any:
        self.queue.stop()
        return super().stopService()
