"""A directory standing for remote storage: ``<root>/<name>``, written atomically.

The namespace does not appear in the path (a blob's name is its digest, unique on its
own); names may contain ``/`` (``repo/name:tag``) and become subdirectories. Copies run
in the reactor's thread pool so the event loop never blocks on disk.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from kraken.backends.base import BackendEntry, BackendError, BlobNotFound
from kraken.core.cas import sync_path
from kraken.core.reactor import IServerReactor, default_reactor


class FilesystemBackend:
    def __init__(self, root: str | Path, reactor: IServerReactor | None = None) -> None:
        if reactor is None:
            reactor = default_reactor()
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.reactor = reactor

    def _path(self, name: str) -> Path:
        parts = name.split("/")
        if not name or any(p in ("", ".", "..") or p.startswith(".") for p in parts) or "\0" in name:
            raise BackendError(f"unusable blob name {name!r}")
        return self.root.joinpath(*parts)

    def _run(self, f: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    def _stat(self, name: str) -> int:
        path = self._path(name)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise BlobNotFound(name) from None
        if not path.is_file():
            raise BlobNotFound(name)
        return st.st_size

    def stat(self, namespace: str, name: str) -> Deferred[int]:
        return self._run(self._stat, name)

    def _copy(self, src: Path, dest: Path) -> None:
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}")
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _download(self, name: str, dest_path: str) -> None:
        src = self._path(name)
        if not src.is_file():
            raise BlobNotFound(name)
        self._copy(src, Path(dest_path))

    def download(self, namespace: str, name: str, dest_path: str) -> Deferred[None]:
        return self._run(self._download, name, dest_path)

    def _upload(self, name: str, src_path: str) -> None:
        dest = self._path(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._copy(Path(src_path), dest)

    def upload(self, namespace: str, name: str, src_path: str) -> Deferred[None]:
        return self._run(self._upload, name, src_path)

    def _entries(self, prefix: str) -> list[BackendEntry]:
        out = []
        for name in self._list(prefix):
            try:
                st = self._path(name).stat()
            except OSError:  # removed meanwhile
                continue
            out.append(BackendEntry(name, st.st_size, st.st_mtime))
        return out

    def entries(self, prefix: str) -> Deferred[list[BackendEntry]]:
        return self._run(self._entries, prefix)

    def _list(self, prefix: str) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root)
            for f in filenames:
                if f.startswith("."):
                    continue
                name = f if rel == Path(".") else f"{rel.as_posix()}/{f}"
                if name.startswith(prefix):
                    out.append(name)
        return sorted(out)

    def list(self, prefix: str) -> Deferred[list[str]]:
        return self._run(self._list, prefix)


    def _delete(self, name: str) -> None:
        path = self._path(name)
        if not path.is_file():
            raise BlobNotFound(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise BlobNotFound(name) from None
        sync_path(path.parent)  # the removal survives a crash, as the write did

    def delete(self, namespace: str, name: str) -> Deferred[None]:
        return self._run(self._delete, name)


def from_config(config: dict[str, Any], reactor: IServerReactor) -> FilesystemBackend:
    unknown = set(config) - {"root"}
    if unknown or "root" not in config:
        raise ValueError(f"fs backend takes exactly one key, root (got {sorted(config)})")
    return FilesystemBackend(config["root"], reactor)
