"""kraken.core.files: one window of a file, as FileBodyProducer reads it."""

from __future__ import annotations

import os
from pathlib import Path

from kraken.core.files import FileWindow


def test_reads_only_its_window(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    window = FileWindow(str(path), 3, 4)
    try:
        assert window.read(2) == b"34"
        assert window.tell() == 2
        assert window.read() == b"56"
        assert window.read() == b""
    finally:
        window.close()


def test_seek_end_gives_the_window_length_and_clamps(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    window = FileWindow(str(path), 2, 5)
    try:
        assert window.seek(0, os.SEEK_END) == 5
        assert window.seek(0) == 0
        assert window.read(100) == b"23456"
        assert window.seek(99) == 5
        assert window.seek(-99, os.SEEK_CUR) == 0
        assert window.read(1) == b"2"
    finally:
        window.close()
