"""Content digests: ``sha256:<64 lowercase hex>``, parsed strictly, computed by streaming."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

ALGO = "sha256"
_HEX = re.compile(r"^[0-9a-f]{64}$")
_READ = 1 << 20


@dataclass(frozen=True)
class Digest:
    """A SHA-256 content digest; ``str(d)`` is ``sha256:<hex>``."""

    algo: str
    hex: str

    def __post_init__(self) -> None:
        if self.algo != ALGO:
            raise ValueError(f"unsupported digest algorithm {self.algo!r}; only sha256 is supported")
        if not _HEX.match(self.hex):
            raise ValueError(f"digest hex must be 64 lowercase hex characters, got {self.hex!r}")

    @classmethod
    def parse(cls, text: str) -> Digest:
        """``sha256:<64 hex>`` → Digest, or ``ValueError`` saying what is wrong."""
        if not isinstance(text, str):
            raise ValueError(f"digest must be a string, got {type(text).__name__}")
        algo, sep, hexpart = text.partition(":")
        if not sep:
            raise ValueError(f"digest {text[:80]!r} lacks the 'sha256:' prefix")
        if algo != ALGO:
            raise ValueError(f"unsupported digest algorithm {algo[:20]!r}; only sha256 is supported")
        if not _HEX.match(hexpart):
            raise ValueError(f"digest {text[:80]!r}: expected 64 lowercase hex characters after 'sha256:'")
        return cls(ALGO, hexpart)

    @classmethod
    def parse_loose(cls, text: str) -> Digest:
        """Like :meth:`parse` but also accepts bare hex (the agent's own endpoints do)."""
        if ":" not in text and _HEX.match(text):
            return cls(ALGO, text)
        return cls.parse(text)

    @classmethod
    def of_bytes(cls, data: bytes) -> Digest:
        return cls(ALGO, hashlib.sha256(data).hexdigest())

    @classmethod
    def of_file(cls, path: str | Path) -> Digest:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_READ):
                h.update(chunk)
        return cls(ALGO, h.hexdigest())

    @property
    def shard(self) -> str:
        return self.hex[:4]

    def __str__(self) -> str:
        return f"{self.algo}:{self.hex}"
