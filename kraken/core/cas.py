"""A content-addressed store on disk: no partial blob is ever visible under its digest.

Layout under ``root``::

    upload/<id>                          partial uploads and temporary files
    cache/<hex[0:2]>/<hex[2:4]>/<hex>/data       complete, verified blobs (the hex's length says
                                         its algorithm: 64 sha256, 128 sha512)
    cache/<hex[0:2]>/<hex[2:4]>/<hex>/<sidecar>  small metadata files (metainfo, ...)
    quarantine/<hex>                     the last copy of a blob found not to match its digest

A blob enters the cache only by renaming a finished, verified file into place, so readers
see either nothing or the whole blob. Sidecars are replaced atomically too.

Bytes on disk can still change later (a faulty disk, an operator's editor, a stray ``dd``).
Each blob carries a *verified mark*, the sidecar ``verified``: the :class:`Stamp` (size,
mtime in ns, inode) its data file had when it last hashed to its digest. A blob whose file
still shows that stamp is served as it is (one ``stat``); any other is hashed again first
(:meth:`CAStore.verify`) and moved to ``quarantine/`` when it no longer matches. When a mark
is written the file's mtime is set two seconds into the past, on a whole second: a later
write stamps the current time, so it cannot leave the mark looking fresh even on a file
system with coarse timestamps. A change that keeps size, mtime and inode (bit rot under the
file system) is not seen by the mark; the P2P receivers' piece hashes and the clients'
digest checks remain the last line there.
"""

from __future__ import annotations

import enum
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kraken.core.digest import Digest

VERIFIED = "verified"  # sidecar: the data file's stamp when it last hashed right
MARK_AGE_NS = 2_000_000_000
MARKS_IN_MEMORY = 100_000  # about 20 MB; the others are read from their sidecars when asked


class DigestMismatch(Exception):
    """The bytes do not hash to the digest they were stored under."""


class UnknownUpload(KeyError):
    """No upload with that id."""


@dataclass(frozen=True)
class Stamp:
    """What identifies one version of a file without reading it."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stamp:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)

    def encode(self) -> bytes:
        return f"{self.size} {self.mtime_ns} {self.inode}\n".encode()

    @classmethod
    def decode(cls, raw: bytes) -> Stamp | None:
        try:
            size, mtime_ns, inode = (int(x) for x in raw.split())
        except ValueError:
            return None
        return cls(size, mtime_ns, inode)


class Verdict(enum.Enum):
    OK = "ok"
    CORRUPT = "corrupt"
    MISSING = "missing"


@dataclass(frozen=True)
class Entry:
    digest: Digest
    size: int
    accessed: float
    modified: float


def write_atomically(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace *path* with *data* so that readers see the old file or the new one.

    With *durable* the data and the rename are synced, so a crash leaves one of them too.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not durable:
        return
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's sync makes the renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CAStore:
    """Blobs by digest under *root*; see the module docstring for the layout."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.upload_dir = self.root / "upload"
        self.cache_dir = self.root / "cache"
        self.quarantine_dir = self.root / "quarantine"
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.marks: dict[str, Stamp] = {}  # digest hex -> its verified mark, as read or written

    # -- complete blobs -------------------------------------------------------------------
    def entry_dir(self, d: Digest) -> Path:
        return self.cache_dir / d.hex[:2] / d.hex[2:4] / d.hex

    def blob_path(self, d: Digest) -> Path:
        return self.entry_dir(d) / "data"

    def has(self, d: Digest) -> bool:
        return self.blob_path(d).is_file()

    def size(self, d: Digest) -> int | None:
        try:
            return self.blob_path(d).stat().st_size
        except FileNotFoundError:
            return None

    def touch(self, d: Digest) -> None:
        """Record a read (used by idle-time cleanup); the mtime, part of the mark, stays."""
        path = self.blob_path(d)
        try:
            os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))
        except FileNotFoundError:
            pass

    def ingest(
        self, src: str | Path, d: Digest, verify: bool = True, checked: bool = False, durable: bool = True
    ) -> Path:
        """Move the finished file *src* (on the same filesystem) into the cache as *d*.

        With *verify* the file is hashed first; a mismatch deletes it and raises
        :class:`DigestMismatch`. *checked* says the caller hashed it just before. Either way
        the blob gets its verified mark. Storing a blob that is already present is a no-op,
        unless the stored copy's mark no longer holds: then a hashed *src* replaces it.
        With *durable* the data and every directory entry leading to it are synced before
        this returns, so a power cut after it keeps the whole blob (a cache may skip that).
        """
        src = Path(src)
        if verify:
            actual = Digest.of_file(src, d.algo)
            if actual != d:
                src.unlink(missing_ok=True)
                raise DigestMismatch(f"content hashes to {actual}, not {d}")
        final = self.entry_dir(d)
        if self.has(d):
            if not (verify or checked) or self.is_verified(d):
                src.unlink(missing_ok=True)
                return final / "data"
            # the stored copy changed since it last hashed right: the hashed new one replaces it
            fresh = self._stamp(src)
            if durable:
                sync_path(src)
            os.replace(src, final / "data")
            if durable:
                sync_path(final)
            write_atomically(final / VERIFIED, fresh.encode(), durable=False)
            self._remember(d, fresh)
            return final / "data"
        stamp = self._stamp(src) if verify or checked else None
        if durable:
            sync_path(src)
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".{d.hex}.{uuid.uuid4().hex}"
        staging.mkdir()
        os.replace(src, staging / "data")
        if stamp is not None:
            write_atomically(staging / VERIFIED, stamp.encode(), durable=False)
        try:
            os.rename(staging, final)
        except OSError:
            # Someone else committed the same blob, or stale sidecars exist: keep the data
            # and its mark only.
            if self.has(d):
                shutil.rmtree(staging, ignore_errors=True)
                return final / "data"
            final.mkdir(exist_ok=True)
            (final / VERIFIED).unlink(missing_ok=True)
            os.replace(staging / "data", final / "data")
            if stamp is not None:
                os.replace(staging / VERIFIED, final / VERIFIED)
            shutil.rmtree(staging, ignore_errors=True)
        if durable:
            for directory in (final, final.parent, final.parent.parent, self.cache_dir):
                sync_path(directory)
        if stamp is not None:
            self._remember(d, stamp)
        return final / "data"

    # -- verified marks and quarantine ----------------------------------------------------
    @staticmethod
    def _stamp(data: Path) -> Stamp:
        """Set *data*'s mtime into the past (see the module docstring) and return its stamp."""
        st = data.stat()
        now = time.time_ns()
        os.utime(data, ns=(st.st_atime_ns, now - now % 1_000_000_000 - MARK_AGE_NS))
        return Stamp.of(data.stat())

    def _mark(self, d: Digest) -> None:
        """Record the stored blob *d* as verified now."""
        stamp = self._stamp(self.blob_path(d))
        write_atomically(self.entry_dir(d) / VERIFIED, stamp.encode(), durable=False)
        self._remember(d, stamp)

    def _remember(self, d: Digest, stamp: Stamp) -> None:
        """Keep *stamp* in memory; the oldest go first past ``MARKS_IN_MEMORY`` (their sidecars stay)."""
        self.marks.pop(d.hex, None)
        self.marks[d.hex] = stamp
        while len(self.marks) > MARKS_IN_MEMORY:
            del self.marks[next(iter(self.marks))]

    def verified_stamp(self, d: Digest) -> Stamp | None:
        """The blob's stamp if its verified mark still holds, else ``None`` (one ``stat``)."""
        try:
            current = Stamp.of(self.blob_path(d).stat())
        except FileNotFoundError:
            self.marks.pop(d.hex, None)
            return None
        mark = self.marks.get(d.hex)
        if mark is None:
            raw = self.read_meta(d, VERIFIED)
            mark = Stamp.decode(raw) if raw else None
            if mark is not None:
                self._remember(d, mark)
        return current if current == mark else None

    def is_verified(self, d: Digest) -> bool:
        return self.verified_stamp(d) is not None

    def verify(self, d: Digest) -> Verdict:
        """Hash the stored blob (blocking): mark it when it matches, quarantine it when not."""
        path = self.blob_path(d)
        try:
            actual = Digest.of_file(path, d.algo)
        except FileNotFoundError:
            return Verdict.MISSING
        if actual == d:
            try:
                self._mark(d)
            except FileNotFoundError:  # deleted while we hashed it
                return Verdict.MISSING
            return Verdict.OK
        self.quarantine(d)
        return Verdict.CORRUPT

    def quarantine(self, d: Digest) -> bool:
        """Move the blob aside to ``quarantine/<hex>`` (replacing an older copy there)."""
        self.marks.pop(d.hex, None)
        path = self.entry_dir(d)
        if not path.exists():
            return False
        self.quarantine_dir.mkdir(exist_ok=True)
        aside = path.parent / f".{d.hex}.quarantined.{uuid.uuid4().hex}"
        os.rename(path, aside)
        target = self.quarantine_dir / d.hex
        shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(aside, target)
        except OSError:  # another quarantine of the same blob won the rename: one copy is enough
            shutil.rmtree(aside, ignore_errors=True)
        return True

    def delete(self, d: Digest) -> bool:
        self.marks.pop(d.hex, None)
        path = self.entry_dir(d)
        if not path.exists():
            return False
        trash = path.parent / f".{d.hex}.deleted.{uuid.uuid4().hex}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def entries(self) -> Iterator[Entry]:
        for data in self.cache_dir.glob("??/??/*/data"):
            try:
                digest = Digest.from_hex(data.parent.name)
                st = data.stat()
            except (ValueError, FileNotFoundError):
                continue
            yield Entry(digest, st.st_size, st.st_atime, st.st_mtime)

    def cleanup(
        self,
        tti: float = 0,
        ttl: float = 0,
        now: float | None = None,
        keep: Callable[[Digest], bool] | None = None,
    ) -> list[Digest]:
        """Delete blobs idle longer than *tti* or older than *ttl* seconds (0 = no limit), except *keep*."""
        now = time.time() if now is None else now
        gone = []
        for e in list(self.entries()):
            if keep is not None and keep(e.digest):
                continue
            if (tti and now - e.accessed > tti) or (ttl and now - e.modified > ttl):
                if self.delete(e.digest):
                    gone.append(e.digest)
        return gone

    # -- sidecars -------------------------------------------------------------------------
    def read_meta(self, d: Digest, name: str) -> bytes | None:
        try:
            return (self.entry_dir(d) / name).read_bytes()
        except FileNotFoundError:
            return None

    def write_meta(self, d: Digest, name: str, data: bytes) -> None:
        if name == "data" or "/" in name or name.startswith("."):
            raise ValueError(f"bad sidecar name {name!r}")
        directory = self.entry_dir(d)
        if not directory.is_dir():
            raise FileNotFoundError(f"no blob {d} in the store")
        write_atomically(directory / name, data, durable=False)

    # -- uploads and temporary files ------------------------------------------------------
    def temp_path(self) -> Path:
        """A fresh path in the upload area (same filesystem as the cache)."""
        return self.upload_dir / f"tmp-{uuid.uuid4().hex}"

    def start_upload(self) -> str:
        uid = uuid.uuid4().hex
        (self.upload_dir / uid).touch()
        return uid

    def upload_path(self, uid: str) -> Path:
        if len(uid) != 32 or not all(c in "0123456789abcdef" for c in uid):
            raise UnknownUpload(uid)
        path = self.upload_dir / uid
        if not path.is_file():
            raise UnknownUpload(uid)
        return path

    def commit_upload(self, uid: str, d: Digest, verify: bool = True) -> Path:
        return self.ingest(self.upload_path(uid), d, verify)

    def abort_upload(self, uid: str) -> None:
        try:
            self.upload_path(uid).unlink(missing_ok=True)
        except UnknownUpload:
            pass


