"""A content-addressed store on disk: no partial blob is ever visible under its digest.

Layout under ``root``::

    upload/<id>                          partial uploads and temporary files
    cache/<hex[0:2]>/<hex[2:4]>/<hex>/data       complete, verified blobs
    cache/<hex[0:2]>/<hex[2:4]>/<hex>/<sidecar>  small metadata files (metainfo, ...)

A blob enters the cache only by renaming a finished, verified file into place, so readers
see either nothing or the whole blob. Sidecars are replaced atomically too.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kraken.core.digest import Digest


class DigestMismatch(Exception):
    """The bytes do not hash to the digest they were stored under."""


class UnknownUpload(KeyError):
    """No upload with that id."""


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


class CAStore:
    """Blobs by digest under *root*; see the module docstring for the layout."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.upload_dir = self.root / "upload"
        self.cache_dir = self.root / "cache"
        self.upload_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)

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
        """Record a read (used by idle-time cleanup)."""
        try:
            os.utime(self.blob_path(d), (time.time(), self.blob_path(d).stat().st_mtime))
        except FileNotFoundError:
            pass

    def ingest(self, src: str | Path, d: Digest, verify: bool = True) -> Path:
        """Move the finished file *src* (on the same filesystem) into the cache as *d*.

        With *verify* the file is hashed first; a mismatch deletes it and raises
        :class:`DigestMismatch`. Storing a blob that is already present is a no-op.
        """
        src = Path(src)
        if verify:
            actual = Digest.of_file(src)
            if actual != d:
                src.unlink(missing_ok=True)
                raise DigestMismatch(f"content hashes to {actual}, not {d}")
        final = self.entry_dir(d)
        if self.has(d):
            src.unlink(missing_ok=True)
            return final / "data"
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = final.parent / f".{d.hex}.{uuid.uuid4().hex}"
        staging.mkdir()
        os.replace(src, staging / "data")
        try:
            os.rename(staging, final)
        except OSError:
            # Someone else committed the same blob, or stale sidecars exist: keep the data only.
            if self.has(d):
                shutil.rmtree(staging, ignore_errors=True)
            else:
                final.mkdir(exist_ok=True)
                os.replace(staging / "data", final / "data")
                shutil.rmtree(staging, ignore_errors=True)
        return final / "data"

    def delete(self, d: Digest) -> bool:
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
                digest = Digest("sha256", data.parent.name)
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


