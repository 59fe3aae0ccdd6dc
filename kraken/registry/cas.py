"""A small content-addressed blob directory: ``<root>/sha256/<2 hex>/<hex>``, atomic renames."""

from __future__ import annotations

import os
from pathlib import Path

from kraken.registry.names import digest_hex


class BlobDirectory:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        hex_ = digest_hex(digest)
        return self.root / "sha256" / hex_[:2] / hex_

    def size(self, digest: str) -> int | None:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def adopt(self, digest: str, src: Path) -> Path:
        """Move the verified file *src* into place (same file system) and return the blob's path."""
        dest = self.path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        return dest

    def touch(self, digest: str) -> None:
        """Mark the blob as used now (the idle cleanup goes by modification time)."""
        try:
            os.utime(self.path(digest))
        except FileNotFoundError:
            pass

    def cleanup(self, idle: float, now: float) -> int:
        """Delete blobs not used for *idle* seconds; returns how many went."""
        removed = 0
        for path in self.root.glob("sha256/*/*"):
            try:
                if now - path.stat().st_mtime > idle:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def write(self, digest: str, data: bytes) -> Path:
        dest = self.path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        return dest
