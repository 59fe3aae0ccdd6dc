"""Tags on disk: ``<root>/<repo>/_tags/<tag>`` holding ``sha256:<hex>``; last writer wins.

Reads always go to the file, so a moved tag resolves to its newest digest at once.
Repository components never start with ``_``, so ``_tags`` cannot clash with a name.
A put is synced (the file and every directory entry it created) before it returns, so an
acknowledged tag survives a crash or a power cut. A tag file that does not hold a digest
(truncated, garbled) is reported once, counted, and read as no tag until it is put again.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.logger import Logger

from kraken.core.cas import sync_path, write_atomically
from kraken.core.digest import Digest
from kraken.core.metrics import Metrics

TAGS_DIR = "_tags"
log = Logger(namespace="kraken.registry.tagstore")


class TagStore:
    def __init__(self, root: str | os.PathLike[str], metrics: Metrics | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.m_corrupt = (
            metrics.counter("corrupt_entries", "unreadable entries found on disk, by store", ["store"])
            if metrics is not None else None
        )
        self.reported: set[Path] = set()

    def _file(self, repo: str, tag: str) -> Path:
        return self.root / repo / TAGS_DIR / tag

    def put(self, repo: str, tag: str, digest: str) -> None:
        path = self._file(repo, tag)
        created = [d for d in path.parents if not d.exists() and self.root in d.parents]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, digest.encode())
        for directory in created:
            sync_path(directory.parent)
        self.reported.discard(path)

    def delete(self, repo: str, tag: str, expected: str | None = None) -> str | None:
        """Remove the tag (only while it points at *expected*, when given); the digest it had, or ``None``.

        The removal is synced; a repository left without tags disappears from the listings.
        """
        digest = self.get(repo, tag)
        if digest is None or (expected is not None and digest != expected):
            return None
        path = self._file(repo, tag)
        path.unlink(missing_ok=True)
        sync_path(path.parent)
        self.reported.discard(path)
        try:
            path.parent.rmdir()
        except OSError:  # other tags remain
            pass
        return digest

    def get(self, repo: str, tag: str) -> str | None:
        path = self._file(repo, tag)
        try:
            text = path.read_bytes().decode("ascii").strip()
            return str(Digest.parse(text))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as e:
            if path not in self.reported:
                self.reported.add(path)
                if self.m_corrupt is not None:
                    self.m_corrupt.labels("tags").inc()
                log.error("tag {repo}:{tag} is damaged on disk ({path}: {error}); it reads as absent "
                          "until it is pushed again", repo=repo, tag=tag, path=str(path), error=str(e))
            return None

    def tags(self, repo: str) -> list[str] | None:
        directory = self.root / repo / TAGS_DIR
        if not directory.is_dir():
            return None
        return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))

    def pushed(self, repo: str) -> list[tuple[str, float]]:
        """``(tag, time it was last put)`` of every tag of *repo*."""
        out = []
        for tag in self.tags(repo) or ():
            try:
                out.append((tag, self._file(repo, tag).stat().st_mtime))
            except OSError:  # removed meanwhile
                continue
        return out

    def repositories(self) -> list[str]:
        repos = []
        for dirpath, dirnames, _ in os.walk(self.root):
            if TAGS_DIR in dirnames:
                repos.append(os.path.relpath(dirpath, self.root).replace(os.sep, "/"))
            dirnames[:] = [d for d in dirnames if d != TAGS_DIR]
        return sorted(repos)

    def entries(self, prefix: str = "") -> list[str]:
        """Every ``repo:tag`` starting with *prefix*, sorted."""
        out: list[str] = []
        for repo in self.repositories():
            if not (repo.startswith(prefix) or prefix.startswith(repo)):
                continue
            out.extend(f"{repo}:{tag}" for tag in self.tags(repo) or ())
        return sorted(e for e in out if e.startswith(prefix))
