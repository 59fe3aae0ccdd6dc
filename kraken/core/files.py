"""Files as HTTP bodies: a read window of a file to send, a writer to receive into one."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO


class FileWindow:
    """The bytes ``[start, start + length)`` of the file at *path*, as a file object.

    It reads, seeks (clamped to the window) and tells as ``FileBodyProducer`` expects, so a
    chunk of a large file goes out streamed without being copied first.
    """

    def __init__(self, path: str, start: int, length: int) -> None:
        self._file = open(path, "rb")
        self._start = start
        self._length = length
        self._pos = 0
        self._file.seek(start)

    def read(self, n: int = -1) -> bytes:
        left = self._length - self._pos
        if left <= 0:
            return b""
        data = self._file.read(left if n < 0 else min(n, left))
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + offset))
        self._file.seek(self._start + self._pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._file.close()


def write_into(f: BinaryIO) -> Callable[[bytes], None]:
    """A body collector (``treq.collect``) that appends what arrives to the open file *f*."""

    def write(data: bytes) -> None:
        f.write(data)

    return write
