"""Tags on disk: ``<root>/<repo>/_tags/<tag>`` holding ``sha256:<hex>``; last writer wins.

Reads always go to the file, so a moved tag resolves to its newest digest at once.
Repository components never start with ``_``, so ``_tags`` cannot clash with a name.
"""

from __future__ import annotations

import os
from pathlib import Path

TAGS_DIR = "_tags"


class TagStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _file(self, repo: str, tag: str) -> Path:
        return self.root / repo / TAGS_DIR / tag

    def put(self, repo: str, tag: str, digest: str) -> None:
        path = self._file(repo, tag)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{tag}.{os.getpid()}.tmp")
        tmp.write_text(digest)
        os.replace(tmp, path)

    def get(self, repo: str, tag: str) -> str | None:
        try:
            return self._file(repo, tag).read_text().strip() or None
        except (FileNotFoundError, NotADirectoryError):
            return None

    def tags(self, repo: str) -> list[str] | None:
        directory = self.root / repo / TAGS_DIR
        if not directory.is_dir():
            return None
        return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))

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
