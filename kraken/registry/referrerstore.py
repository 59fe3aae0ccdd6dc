"""Referrers on disk: ``<root>/<repo>/_subjects/<subject>/<referrer digest>`` holding its descriptor.

Used by the build-index (shared by the proxy and the agents) and by a proxy without one.
Each entry is one small JSON file written atomically and synced with the directory entries it
created, so an acknowledged manifest put keeps its entry through a crash; removing the
manifest's entry is one unlink. Repository components never start with ``_`` and digests
hold a ``:``, so neither can clash with a repository name. An entry that does not parse
(truncated, garbled) is reported once and skipped until the manifest is pushed again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from kraken.core import jsonlimits
from kraken.core.cas import sync_path, write_atomically
from kraken.core.digest import Digest
from kraken.registry import referrers as rf
from kraken.registry.errors import RegistryError

SUBJECTS_DIR = "_subjects"
log = Logger(namespace="kraken.registry.referrerstore")


class TooManyReferrers(Exception):
    """A subject already has :data:`~kraken.registry.referrers.MAX_REFERRERS` referrers."""


class ReferrerStore:
    def __init__(self, root: str | os.PathLike[str], limit: int = rf.MAX_REFERRERS) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.limit = limit
        self.reported: set[Path] = set()

    def _dir(self, repo: str, subject: Digest) -> Path:
        return self.root / repo / SUBJECTS_DIR / str(subject)

    def add(self, repo: str, subject: Digest, entry: dict[str, Any]) -> None:
        """Store *entry* (checked with :func:`~kraken.registry.referrers.check_descriptor`)."""
        digest = Digest.parse(rf.check_descriptor(entry)["digest"])
        data = json.dumps(entry, separators=(",", ":"), sort_keys=True).encode()
        if len(data) > rf.MAX_DESCRIPTOR:
            raise ValueError(f"descriptor over {rf.MAX_DESCRIPTOR} bytes")
        directory = self._dir(repo, subject)
        path = directory / str(digest)
        if not path.exists() and directory.is_dir() and sum(1 for _ in os.scandir(directory)) >= self.limit:
            raise TooManyReferrers(f"{subject} already has {self.limit} referrers in {repo}")
        created = [d for d in directory.parents if not d.exists() and self.root in d.parents]
        if not directory.exists():
            created.insert(0, directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)
        for d in created:
            sync_path(d.parent)
        self.reported.discard(path)

    def remove(self, repo: str, subject: Digest, digest: Digest) -> bool:
        """Forget one entry; ``False`` when there was none. The emptied subject directory goes too."""
        directory = self._dir(repo, subject)
        try:
            (directory / str(digest)).unlink()
        except (FileNotFoundError, NotADirectoryError):
            return False
        sync_path(directory)
        try:
            directory.rmdir()
        except OSError:  # other referrers remain
            pass
        return True

    def subjects(self) -> list[tuple[str, Digest]]:
        """``(repository, subject)`` of every subject that has referrers recorded."""
        out = []
        for dirpath, dirnames, _ in os.walk(self.root):
            if SUBJECTS_DIR in dirnames:
                repo = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
                for name in sorted(os.listdir(os.path.join(dirpath, SUBJECTS_DIR))):
                    try:
                        out.append((repo, Digest.parse(name)))
                    except ValueError:  # not a subject directory
                        continue
            dirnames[:] = [d for d in dirnames if d != SUBJECTS_DIR]
        return sorted(out, key=lambda pair: (pair[0], str(pair[1])))

    def recorded_at(self, repo: str, subject: Digest, digest: Digest) -> float | None:
        """When the entry was written (seconds since the epoch), or ``None`` without one."""
        try:
            return (self._dir(repo, subject) / str(digest)).stat().st_mtime
        except OSError:
            return None

    def entries(self, repo: str, subject: Digest) -> list[dict[str, Any]]:
        directory = self._dir(repo, subject)
        try:
            names = [p for p in directory.iterdir() if not p.name.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for path in names:
            try:
                entry = rf.check_descriptor(jsonlimits.loads(path.read_bytes(), strict=True))
                if entry["digest"] != path.name:
                    raise ValueError(f"it describes {entry['digest'][:80]}")
            except FileNotFoundError:  # removed meanwhile
                continue
            except (OSError, ValueError) as e:
                if path not in self.reported:
                    self.reported.add(path)
                    log.error("referrer entry {path} is damaged ({error}); it is skipped until the "
                              "manifest is pushed again", path=str(path), error=str(e)[:200])
                continue
            out.append(entry)
        return out

    def page(
        self, repo: str, subject: Digest, artifact_type: str | None, last: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        return rf.select(self.entries(repo, subject), artifact_type, last)


class LocalReferrers:
    """A :class:`~kraken.registry.referrers.ReferrerIndex` over a :class:`ReferrerStore` (no build-index)."""

    def __init__(self, store: ReferrerStore) -> None:
        self.store = store

    def add(self, repo: str, subject: Digest, entry: dict[str, Any]) -> Deferred[Any]:
        try:
            self.store.add(repo, subject, entry)
        except TooManyReferrers as e:
            raise RegistryError("DENIED", str(e), status=403) from None
        return succeed(None)

    def remove(self, repo: str, subject: Digest, digest: Digest) -> Deferred[Any]:
        return succeed(self.store.remove(repo, subject, digest))

    def page(
        self, repo: str, subject: Digest, artifact_type: str | None, last: str | None
    ) -> Deferred[tuple[list[dict[str, Any]], str | None]]:
        return succeed(self.store.page(repo, subject, artifact_type, last))
