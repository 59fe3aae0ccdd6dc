"""Blob upload sessions: bytes hashed and written to disk as they arrive, durable, expired when idle.

A session is a data file in the upload directory plus a running SHA-256. Each request body
(``PATCH`` chunk, final ``PUT`` chunk, monolithic ``POST``) is one :class:`ChunkSink`; a
chunk either lands completely or is rolled back (file truncated, hash restored), so the
session's ``Range`` is always what the client can resume from. The file is open only while
a chunk is being written, so idle sessions hold no file descriptor.

Sessions opened by ``POST`` survive a restart: ``<id>.session`` beside the data file starts
with one JSON line (id, repository, client, start time) and gets one ``<offset> <time>`` line
per acknowledged ``PATCH``; the chunk's bytes and that line are synced before the ``202`` (one
small write per chunk, whatever the upload's size). At start the last complete line, or the
data file's size if smaller, gives the offset: the data file is cut back to it (a chunk that
was never acknowledged goes) and hashed again; sessions idle past the time-out are deleted.

Limits: *max_sessions* open sessions in all, *max_per_client* for one client (its certificate
name under mutual TLS, else its address), so one client cannot lock the others out; a session
idle for *ttl* seconds is deleted with its bytes (each ``PATCH`` restarts the clock).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.core.digest import ALGO, Digest, new_hash
from kraken.core.httplimits import log_refusal
from kraken.core.metrics import Metrics
from kraken.core.streaming import BodySink
from kraken.core.uploads import ChunkWriter, RunningHash
from kraken.registry.errors import RegistryError, upload_unknown

log = Logger(namespace="kraken.registry.uploads")

DATA_SUFFIX = ".upload"
JOURNAL_SUFFIX = ".session"
TEMP_SUFFIXES = (".manifest",)  # temporary files other requests leave in the directory
READ_SIZE = 1024 * 1024

Blocking = Callable[[Callable[[], None]], "Deferred[None]"]


def run_inline(work: Callable[[], None]) -> Deferred[None]:
    """Run *work* now (tests, or where no thread pool is at hand)."""
    return maybeDeferred(work)


@dataclass(eq=False)
class UploadSession:
    id: str
    name: str
    path: Path
    started: float
    touched: float
    client: str = "-"
    size: int = 0
    hasher: RunningHash = field(default_factory=hashlib.sha256)
    algo: str = ALGO  # the hasher's algorithm
    busy: bool = False
    writer: ChunkWriter | None = None

    @property
    def journal(self) -> Path:
        return self.path.with_suffix(JOURNAL_SUFFIX)

    def digest(self) -> Digest:
        return Digest(self.algo, self.hasher.hexdigest())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class ChunkSink(BodySink):
    """One upload request body, appended to its session as it arrives.

    A sink that carries an ``error`` discards what it receives; the handler answers with the error.
    While its chunk is being made durable (:meth:`UploadManager.commit_chunk`) it cannot be undone.
    """

    def __init__(self, manager: UploadManager, session: UploadSession | None, error: RegistryError | None):
        self.manager = manager
        self.session = session
        self.error = error
        self.received = 0
        self.expected: int | None = None
        self.owns_session = False
        self.done = False
        self.committing = False
        self.start = session.size if session else 0

    def write(self, data: bytes) -> None:
        self.received += len(data)
        s = self.session
        if self.error is not None or s is None or self.committing:
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
        if s is None or s.writer is None or self.committing:
            return
        s.writer.rollback()
        s.size = self.start
        self.release()

    def abort(self) -> None:
        """The request failed or its connection was lost: undo, and drop a session made for it."""
        if self.session is None or self.committing:
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


def _sync_data(fd: int) -> None:
    os.fdatasync(fd)


def _append_line(journal: Path, line: bytes, sync: bool = True) -> None:
    with open(journal, "ab") as f:
        f.write(line)
        if sync:
            f.flush()
            os.fdatasync(f.fileno())


def _sync_new(journal: Path) -> None:
    fd = os.open(journal, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fd = os.open(journal.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class UploadManager:
    """Open upload sessions of one server, kept in *directory*, dropped after *ttl* idle seconds.

    *run_blocking* runs the disk syncs (give it a thread pool so the reactor does not wait on
    the disk); with *sync* false nothing is synced (a crash of the process loses nothing, a
    power cut may lose acknowledged chunks); *metrics* counts refused and expired sessions.
    """

    def __init__(
        self, directory: str | os.PathLike[str], clock: IReactorTime, ttl: float = 300.0,
        max_size: int = 10 * 1024**3, max_sessions: int = 1000, max_per_client: int = 100,
        run_blocking: Blocking = run_inline, metrics: Metrics | None = None, sync: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.ttl = ttl
        self.max_size = max_size
        self.max_sessions = max_sessions
        self.max_per_client = max_per_client
        self.run_blocking = run_blocking
        self.sync = sync
        self.sessions: dict[str, UploadSession] = {}
        self.per_client: dict[str, int] = {}
        self.bytes_received = 0
        self._expiry: LoopingCall | None = None
        self.refused = metrics.counter("upload_sessions_refused", "upload sessions refused by a limit",
                                       ["limit"]) if metrics else None
        self.expired = metrics.counter("upload_sessions_expired", "idle upload sessions deleted") if metrics \
            else None
        self.corrupt = metrics.counter("corrupt_entries", "unreadable entries found on disk, by store",
                                       ["store"]) if metrics else None
        self._load()

    # -- lifetime ------------------------------------------------------------------------------

    def start_expiry(self, interval: float = 60.0) -> None:
        self._expiry = LoopingCall(self.expire)
        self._expiry.clock = self.clock
        self._expiry.start(interval, now=False)

    def stop_expiry(self) -> None:
        if self._expiry is not None and self._expiry.running:
            self._expiry.stop()

    def create(self, name: str, client: str = "-", persistent: bool = False) -> UploadSession:
        """A new session for *client*; *persistent* ones survive a restart (see :meth:`sync_new`)."""
        if self.per_client.get(client, 0) >= self.max_per_client or len(self.sessions) >= self.max_sessions:
            self.expire()
        if self.per_client.get(client, 0) >= self.max_per_client:
            self._refuse("client", client, f"{self.max_per_client} uploads are open for this client")
        if len(self.sessions) >= self.max_sessions:
            self._refuse("total", client, f"{self.max_sessions} uploads are open")
        sid = uuid.uuid4().hex
        now = self.clock.seconds()
        session = UploadSession(sid, name, self.directory / f"{sid}{DATA_SUFFIX}", now, now, client)
        session.path.touch()
        if persistent:
            header = {"id": sid, "name": name, "client": client, "started": now}
            session.journal.write_bytes(json.dumps(header).encode() + b"\n")
        self._add(session)
        return session

    def sync_new(self, session: UploadSession) -> Deferred[None]:
        """Make a persistent session's creation durable (before its ``202``)."""
        return self.run_blocking(lambda: _sync_new(session.journal))

    def _refuse(self, limit: str, client: str, message: str) -> None:
        if self.refused is not None:
            self.refused.labels(limit).inc()
        log_refusal(f"upload sessions ({limit})", client, f"upload session refused: {message}")
        raise RegistryError("TOOMANYREQUESTS", f"{message}; finish or delete some, or try again later",
                            headers={"Retry-After": str(int(min(self.ttl, 60)))})

    def _add(self, session: UploadSession) -> None:
        self.sessions[session.id] = session
        self.per_client[session.client] = self.per_client.get(session.client, 0) + 1

    def _remove(self, session: UploadSession) -> None:
        if self.sessions.pop(session.id, None) is None:
            return
        left = self.per_client.get(session.client, 1) - 1
        if left > 0:
            self.per_client[session.client] = left
        else:
            self.per_client.pop(session.client, None)

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

    def commit_chunk(self, sink: ChunkSink) -> Deferred[None]:
        """Make *sink*'s chunk durable (data, then the new offset) and release the session.

        Cancelling the returned Deferred (the client went away) does not stop the commit.
        """
        session = sink.session
        assert session is not None and session.writer is not None
        sink.committing = True
        done: Deferred[None] = Deferred()
        journal = session.journal
        if not journal.exists():  # a session that is not persistent (monolithic upload)
            sink.committing = False
            sink.release()
            done.callback(None)
            return done
        line = f"{session.size} {self.clock.seconds():.3f}\n".encode()
        fd = session.writer.fd
        assert fd is not None

        def finished(_: None) -> None:
            sink.committing = False
            sink.release()
            if not done.called:
                done.callback(None)

        def failed(failure: Failure) -> None:
            sink.committing = False
            log.error("upload {id}: could not make a chunk durable: {error}", id=session.id,
                      error=failure.getErrorMessage())
            sink.rollback()
            if not done.called:
                done.errback(RegistryError("UNKNOWN", "could not store the chunk; send it again", status=500))

        if not self.sync:  # the page cache outlives the process: a kill -9 still loses nothing
            maybeDeferred(_append_line, journal, line, False).addCallbacks(finished, failed)
            return done
        # Both syncs at once: the file system commits them together (one journal commit, not
        # two). Which lands first does not matter: at start the offset is the smaller of the
        # journal's and the data file's (see _read_journal).
        syncs = [self.run_blocking(lambda: _sync_data(fd)),
                 self.run_blocking(lambda: _append_line(journal, line))]
        gatherResults(syncs, consumeErrors=True).addCallbacks(lambda _: finished(None), failed)
        return done

    def discard(self, session: UploadSession) -> None:
        self._remove(session)
        session.close()
        session.path.unlink(missing_ok=True)
        session.journal.unlink(missing_ok=True)

    def digest_as(self, session: UploadSession, algo: str) -> Deferred[Digest]:
        """The session's content digest with *algo*: the running hash's at once, another
        algorithm (a client's ``?digest=sha512:...`` at the end of a chunked upload) by hashing
        the data file (blocking work)."""
        if algo == session.algo:
            return succeed(session.digest())
        found: list[Digest] = []
        return self.run_blocking(lambda: found.append(Digest.of_file(session.path, algo))).addCallback(
            lambda _: found[0])

    def hash_with(self, session: UploadSession, algo: str) -> None:
        """Hash an empty *session* with *algo* as its bytes arrive (a monolithic upload names it first)."""
        if session.size == 0 and algo != session.algo:
            session.hasher, session.algo = new_hash(algo), algo

    def finish(self, session: UploadSession) -> Path:
        """Close *session* and hand its file over to the caller, who must move or delete it."""
        self._remove(session)
        session.close()
        session.journal.unlink(missing_ok=True)
        return session.path

    def expire(self) -> int:
        cutoff = self.clock.seconds() - self.ttl
        old = [s for s in self.sessions.values() if s.touched < cutoff and not s.busy]
        for session in old:
            log.info("upload {id} for {name} expired after {size} bytes", id=session.id,
                     name=session.name, size=session.size)
            self.discard(session)
        if old and self.expired is not None:
            self.expired.inc(len(old))
        return len(old)

    # -- restart ---------------------------------------------------------------------------------

    def _load(self) -> None:
        """Take over the sessions a previous run left; delete expired, damaged and temporary files."""
        cutoff = self.clock.seconds() - self.ttl
        for journal in sorted(self.directory.glob(f"*{JOURNAL_SUFFIX}")):
            session = self._read_journal(journal)
            if session is None or session.touched < cutoff:
                journal.unlink(missing_ok=True)
                journal.with_suffix(DATA_SUFFIX).unlink(missing_ok=True)
                if session is not None and self.expired is not None:
                    self.expired.inc()
                continue
            self._add(session)
        for path in self.directory.iterdir():
            orphan = path.suffix == DATA_SUFFIX and path.stem not in self.sessions
            if orphan or path.suffix in TEMP_SUFFIXES:
                path.unlink(missing_ok=True)
        if self.sessions:
            log.info("{n} upload sessions resumed", n=len(self.sessions))

    def _read_journal(self, journal: Path) -> UploadSession | None:
        try:
            lines = journal.read_bytes().split(b"\n")
            header = json.loads(lines[0])
            session = UploadSession(
                str(header["id"]), str(header["name"]), journal.with_suffix(DATA_SUFFIX),
                float(header["started"]), float(header["started"]), str(header.get("client", "-")),
            )
            damaged = 0
            for line in lines[1:-1]:  # the last piece has no newline: incomplete, ignored
                try:
                    size, touched = line.split()
                    if int(size) < session.size:
                        raise ValueError("offset goes back")
                    session.size, session.touched = int(size), float(touched)
                except ValueError:
                    damaged += 1  # a garbled progress line: the next good one carries on
            if damaged:
                self._count_corrupt()
                log.error("upload session journal {path}: {n} unreadable progress lines skipped; the "
                          "session resumes at {size} bytes", path=str(journal), n=damaged, size=session.size)
            if session.id != journal.stem:
                raise ValueError("the journal names another session")
            # the data file may hold a chunk that was never acknowledged (cut off here), or,
            # after a power cut during a chunk's syncs, less than its line says (resume there)
            session.size = min(session.size, session.path.stat().st_size)
            with open(session.path, "r+b") as f:
                f.truncate(session.size)
                left = session.size
                while left:
                    block = f.read(min(READ_SIZE, left))
                    if not block:
                        raise ValueError("the data file ended early")
                    session.hasher.update(block)
                    left -= len(block)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            self._count_corrupt()
            log.error("upload session {path} dropped at start: {error}", path=str(journal), error=e)
            return None
        return session

    def _count_corrupt(self) -> None:
        if self.corrupt is not None:
            self.corrupt.labels("upload_sessions").inc()
