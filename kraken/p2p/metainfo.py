"""Metainfo: how a blob is cut into pieces, the SHA-256 of each piece, and the info hash.

The blob's own digest (the name) may be SHA-256 or SHA-512; pieces and the info hash are
always SHA-256.

The info hash is SHA-256 over a canonical binary encoding of (name, length, piece length,
piece hashes)::

    b"kraken-metainfo-v1\\n" | u16 len(name) | name (ASCII hex digest, 64 or 128 characters)
    | u64 length | u64 piece_length | u32 piece count | 32-byte piece hashes...

(all integers big-endian). JSON form (HTTP, sidecar file)::

    {"name": "<hex digest>", "length": N, "piece_length": P, "piece_hashes": ["<hex>", ...]}

Readers rebuild the object from JSON and recompute the info hash; they never trust a sent one.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from kraken.core import jsonlimits
from kraken.core.digest import Digest
from kraken.core.jsonlimits import JSONLimitError

MAGIC = b"kraken-metainfo-v1\n"
DEFAULT_PIECE_LENGTH = 4 * 1024 * 1024
MAX_PIECE_LENGTH = 256 * 1024 * 1024
# A cap on a metainfo answer against endless bodies: 67 bytes per piece, so ~7 TB in 4 MiB pieces.
MAX_METAINFO_BYTES = 128 * 1024 * 1024


class MetaInfoError(ValueError):
    """Metainfo that is inconsistent or malformed."""


@dataclass(frozen=True)
class MetaInfo:
    digest: Digest
    length: int
    piece_length: int
    piece_hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if self.length < 0:
            raise MetaInfoError("length must not be negative")
        if not 1 <= self.piece_length <= MAX_PIECE_LENGTH:
            raise MetaInfoError(f"piece length must be in 1..{MAX_PIECE_LENGTH}")
        expected = -(-self.length // self.piece_length)
        if len(self.piece_hashes) != expected:
            raise MetaInfoError(f"{len(self.piece_hashes)} piece hashes for {expected} pieces")
        if any(len(h) != 32 for h in self.piece_hashes):
            raise MetaInfoError("every piece hash must be 32 bytes (SHA-256)")

    @property
    def num_pieces(self) -> int:
        return len(self.piece_hashes)

    def piece_size(self, index: int) -> int:
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece {index} out of range 0..{self.num_pieces - 1}")
        return min(self.piece_length, self.length - index * self.piece_length)

    def piece_offset(self, index: int) -> int:
        return index * self.piece_length

    def canonical(self) -> bytes:
        name = self.digest.hex.encode("ascii")
        head = MAGIC + struct.pack(">H", len(name)) + name
        head += struct.pack(">QQI", self.length, self.piece_length, self.num_pieces)
        return head + b"".join(self.piece_hashes)

    @cached_property
    def info_hash(self) -> bytes:
        return hashlib.sha256(self.canonical()).digest()

    @property
    def info_hash_hex(self) -> str:
        return self.info_hash.hex()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.digest.hex,
            "length": self.length,
            "piece_length": self.piece_length,
            "piece_hashes": [h.hex() for h in self.piece_hashes],
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, data: Any) -> MetaInfo:
        if not isinstance(data, Mapping):
            raise MetaInfoError("metainfo must be a JSON object")
        try:
            digest = Digest.from_hex(data["name"])
            length, piece_length = data["length"], data["piece_length"]
            if not isinstance(length, int) or not isinstance(piece_length, int):
                raise MetaInfoError("length and piece_length must be integers")
            hashes = tuple(bytes.fromhex(h) for h in data["piece_hashes"])
        except KeyError as e:
            raise MetaInfoError(f"metainfo lacks {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            if isinstance(e, MetaInfoError):
                raise
            raise MetaInfoError(f"bad metainfo: {e}") from None
        return cls(digest, length, piece_length, hashes)

    @classmethod
    def from_json(cls, raw: bytes | str) -> MetaInfo:
        try:
            data = jsonlimits.loads(raw, strict=True)
        except JSONLimitError as e:
            raise MetaInfoError(f"metainfo {e}") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise MetaInfoError(f"metainfo is not JSON: {str(e)[:200]}") from None
        return cls.from_dict(data)


def piece_length_for(size: int, thresholds: Mapping[int, int] | None = None) -> int:
    """The piece length of the largest threshold not above *size* (default 4 MiB for all)."""
    table = dict(thresholds or {0: DEFAULT_PIECE_LENGTH})
    chosen = DEFAULT_PIECE_LENGTH
    for threshold in sorted(table):
        if threshold <= size:
            chosen = table[threshold]
    return chosen


def generate(path: str | Path, digest: Digest, piece_length: int) -> MetaInfo:
    """Hash the file at *path* piece by piece (streaming) into metainfo for *digest*."""
    hashes = []
    length = 0
    with open(path, "rb") as f:
        while True:
            piece = f.read(piece_length)
            if not piece:
                break
            hashes.append(hashlib.sha256(piece).digest())
            length += len(piece)
    return MetaInfo(digest, length, piece_length, tuple(hashes))


def parse_thresholds(raw: Mapping[Any, Any]) -> dict[int, int]:
    """Config form ``{"0": 4194304, "1073741824": 16777216}`` (keys may be strings)."""
    out = {}
    for k, v in raw.items():
        try:
            size, plen = int(k), int(v)
        except (TypeError, ValueError):
            raise MetaInfoError(f"piece_lengths: {k!r}: {v!r} must be integers") from None
        if size < 0 or not 1 <= plen <= MAX_PIECE_LENGTH:
            raise MetaInfoError(f"piece_lengths: {k!r}: {v!r} out of range")
        out[size] = plen
    return out
