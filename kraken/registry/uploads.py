"""Blob upload sessions: bytes hashed and written to disk as they arrive, expired on a clock.

A session is a file in the upload directory plus a running SHA-256. Each request body
(``PATCH`` chunk, final ``PUT`` chunk, monolithic ``POST``) is one :class:`ChunkSink`; a
chunk either lands completely or is rolled back (file truncated, hash restored), so the
session's ``Range`` is always what the client can resume from. The file is open only while
a chunk is being written, so idle sessions hold no file descriptor.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from kraken.core.digest import ALGO, Digest
from kraken.core.streaming import BodySink
from kraken.core.uploads import ChunkWriter, RunningHash
from kraken.registry.errors import RegistryError, upload_unknown

log = Logger(namespace="kraken.registry.uploads")


@dataclass(eq=False)
class UploadSession:
    id: str
    name: str
    path: Path
    started: float
    touched: float
    size: int = 0
    hasher: RunningHash = field(default_factory=hashlib.sha256)
    busy: bool = False
    writer: ChunkWriter | None = None

    def digest(self) -> Digest:
        return Digest(ALGO, self.hasher.hexdigest())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class ChunkSink(BodySink):
    """One upload request body, appended to its session as it arrives.

    A sink that carries an ``error`` discards what it receives; the handler answers with the error.
    """

    def __init__(self, manager: UploadManager, session: UploadSession | None, error: RegistryError | None):
        self.manager = manager
        self.session = session
        self.error = error
        self.received = 0
        self.expected: int | None = None
        self.owns_session = False
        self.done = False
        self.start = session.size if session else 0

    def write(self, data: bytes) -> None:
        self.received += len(data)
        s = self.session
        if self.error is not None or s is None:
            return
        if s.size + len(data) > self.manager.max_size:
            self.error = RegistryError(
                "SIZE_INVALID", f"blob larger than the limit of {self.manager.max_size} bytes", status=413
            )
            self.rollback()
            return
        assert s.writer is not None
        s.writer.write(data)
        s.size += len(data)
        self.manager.bytes_received += len(data)

    def rollback(self) -> None:
        """Undo this chunk (error or lost connection)."""
        s = self.session
        if s is None or s.writer is None:
            return
        s.writer.rollback()
        s.size = self.start
        self.release()

    def abort(self) -> None:
        """The request failed or its connection was lost: undo, and drop a session made for it."""
        if self.session is None:
            return
        if not self.done:
            self.rollback()
        if self.owns_session:
            self.manager.discard(self.session)

    def release(self) -> None:
        if self.session is not None and not self.done:
            self.done = True
            self.session.busy = False
            if self.session.writer is not None and self.session.writer.hasher is not None:
                self.session.hasher = self.session.writer.hasher
            self.session.close()
            self.session.touched = self.manager.clock.seconds()


class UploadManager:
    """Open upload sessions of one server, kept in *directory*, dropped after *ttl* idle seconds."""

    def __init__(
        self, directory: str | os.PathLike[str], clock: IReactorTime, ttl: float = 3600.0,
        max_size: int = 10 * 1024**3, max_sessions: int = 1000,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("*.upload"):
            stale.unlink(missing_ok=True)
        self.clock = clock
        self.ttl = ttl
        self.max_size = max_size
        self.max_sessions = max_sessions
        self.sessions: dict[str, UploadSession] = {}
        self.bytes_received = 0
        self._expiry: LoopingCall | None = None

    def start_expiry(self, interval: float = 60.0) -> None:
        self._expiry = LoopingCall(self.expire)
        self._expiry.clock = self.clock
        self._expiry.start(interval, now=False)

    def stop_expiry(self) -> None:
        if self._expiry is not None and self._expiry.running:
            self._expiry.stop()

    def create(self, name: str) -> UploadSession:
        sid = uuid.uuid4().hex
        path = self.directory / f"{sid}.upload"
        now = self.clock.seconds()
        if len(self.sessions) >= self.max_sessions:
            self.expire()
            if len(self.sessions) >= self.max_sessions:
                message = f"{self.max_sessions} uploads are open; try again later"
                raise RegistryError("TOOMANYREQUESTS", message)
        session = UploadSession(sid, name, path, now, now)
        path.touch()
        self.sessions[sid] = session
        return session

    def get(self, name: str, sid: str) -> UploadSession:
        session = self.sessions.get(sid)
        if session is None or session.name != name:
            raise upload_unknown(sid)
        return session

    def open_chunk(self, name: str, sid: str) -> ChunkSink:
        """A sink for one request body appended to session *sid* (an error sink if it cannot be)."""
        try:
            session = self.get(name, sid)
        except RegistryError as e:
            return ChunkSink(self, None, e)
        if session.busy:
            return ChunkSink(
                self, None,
                RegistryError("BLOB_UPLOAD_INVALID", "another request is writing to this upload", status=409),
            )
        session.busy = True
        session.writer = ChunkWriter(session.path, session.size, session.hasher)
        return ChunkSink(self, session, None)

    def discard(self, session: UploadSession) -> None:
        self.sessions.pop(session.id, None)
        session.close()
        session.path.unlink(missing_ok=True)

    def finish(self, session: UploadSession) -> Path:
        """Close *session* and hand its file over to the caller, who must move or delete it."""
        self.sessions.pop(session.id, None)
        session.close()
        return session.path

    def expire(self) -> int:
        cutoff = self.clock.seconds() - self.ttl
        old = [s for s in self.sessions.values() if s.touched < cutoff and not s.busy]
        for session in old:
            log.info("upload {id} for {name} expired after {size} bytes", id=session.id,
                     name=session.name, size=session.size)
            self.discard(session)
        return len(old)
