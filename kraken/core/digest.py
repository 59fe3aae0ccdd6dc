"""Content digests: ``sha256:<64 hex>`` or ``sha512:<128 hex>`` (lowercase), parsed strictly,
computed by streaming.

SHA-256 is the default everywhere kraken computes a digest of its own (manifests pushed by
tag, piece hashes, info hashes); SHA-512 digests come from clients (OCI 1.1: uploads with
``?digest=sha512:...``, manifests pushed by a sha512 reference). The hex lengths differ, so a
bare hex string (a directory name, a backend key) names its algorithm by its length.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ALGO = "sha256"
HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_ALGO_BY_LENGTH = {n: a for a, n in HEX_LENGTHS.items()}
_HEX = re.compile(r"^[0-9a-f]+$")
_READ = 1 << 20


def _check(algo: str, hexpart: str, text: str | None = None) -> None:
    length = HEX_LENGTHS.get(algo)
    if length is None:
        raise ValueError(f"unsupported digest algorithm {algo[:20]!r}; sha256 and sha512 are supported")
    if len(hexpart) != length or not _HEX.match(hexpart):
        where = f"digest {text[:80]!r}: expected" if text is not None else "digest hex must be"
        raise ValueError(f"{where} {length} lowercase hex characters after '{algo}:'")


def new_hash(algo: str = ALGO) -> Any:
    """A fresh hashlib object of *algo* (``sha256`` or ``sha512``)."""
    if algo not in HEX_LENGTHS:
        raise ValueError(f"unsupported digest algorithm {algo[:20]!r}")
    return hashlib.new(algo)


@dataclass(frozen=True)
class Digest:
    """A content digest; ``str(d)`` is ``<algo>:<hex>``."""

    algo: str
    hex: str

    def __post_init__(self) -> None:
        _check(self.algo, self.hex)

    @classmethod
    def parse(cls, text: str) -> Digest:
        """``sha256:<64 hex>`` / ``sha512:<128 hex>`` → Digest, or ``ValueError`` saying what is wrong."""
        if not isinstance(text, str):
            raise ValueError(f"digest must be a string, got {type(text).__name__}")
        algo, sep, hexpart = text.partition(":")
        if not sep:
            raise ValueError(f"digest {text[:80]!r} lacks an algorithm prefix such as 'sha256:'")
        _check(algo, hexpart, text)
        return cls(algo, hexpart)

    @classmethod
    def from_hex(cls, hexpart: str) -> Digest:
        """The digest a bare hex string names (its length says the algorithm)."""
        algo = _ALGO_BY_LENGTH.get(len(hexpart)) if isinstance(hexpart, str) else None
        if algo is None:
            raise ValueError(f"a bare digest has 64 (sha256) or 128 (sha512) hex characters, "
                             f"got {str(hexpart)[:90]!r}")
        return cls(algo, hexpart)

    @classmethod
    def parse_loose(cls, text: str) -> Digest:
        """Like :meth:`parse` but also accepts bare hex (the agent's own endpoints do)."""
        if ":" not in text and _HEX.match(text) and len(text) in _ALGO_BY_LENGTH:
            return cls.from_hex(text)
        return cls.parse(text)

    @classmethod
    def of_bytes(cls, data: bytes, algo: str = ALGO) -> Digest:
        h = new_hash(algo)
        h.update(data)
        return cls(algo, h.hexdigest())

    @classmethod
    def of_file(cls, path: str | Path, algo: str = ALGO) -> Digest:
        h = new_hash(algo)
        with open(path, "rb") as f:
            while chunk := f.read(_READ):
                h.update(chunk)
        return cls(algo, h.hexdigest())

    @property
    def raw(self) -> bytes:
        return bytes.fromhex(self.hex)

    @property
    def shard(self) -> str:
        return self.hex[:4]

    def __str__(self) -> str:
        return f"{self.algo}:{self.hex}"
