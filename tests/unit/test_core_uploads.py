"""kraken.core.uploads: one chunk appended to an upload file, hashed, undone whole."""

from __future__ import annotations

import hashlib
from pathlib import Path

from kraken.core.uploads import ChunkWriter


def test_chunk_appends_and_hashes(tmp_path: Path) -> None:
    path = tmp_path / "upload"
    path.write_bytes(b"head ")
    hasher = hashlib.sha256(b"head ")
    writer = ChunkWriter(path, 5, hasher)
    assert writer.file_size() == 5
    writer.write(b"and ")
    writer.write(memoryview(b"tail"))
    writer.close()
    assert path.read_bytes() == b"head and tail"
    assert writer.hasher is not None
    assert writer.hasher.hexdigest() == hashlib.sha256(b"head and tail").hexdigest()


def test_rollback_cuts_the_file_and_restores_the_hash(tmp_path: Path) -> None:
    path = tmp_path / "upload"
    path.write_bytes(b"kept")
    writer = ChunkWriter(path, 4, hashlib.sha256(b"kept"))
    writer.write(b" and lost")
    writer.rollback()
    writer.close()
    assert path.read_bytes() == b"kept"
    assert writer.written == 0
    assert writer.hasher is not None
    assert writer.hasher.hexdigest() == hashlib.sha256(b"kept").hexdigest()
