"""One upload chunk written to disk as it arrives: appended at the upload's end, undone whole.

The origin's PATCH bodies and the registry's upload requests both land in a file that grows
one request body at a time; a body that fails or stops short is cut off again so the file
always ends where the client can resume. What to accept and how to answer stays with each
protocol's sink; the writing, the running hash and the undo are here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol


class RunningHash(Protocol):
    """What ``hashlib`` hash objects offer that a chunk needs."""

    def update(self, data: bytes | memoryview, /) -> None: ...
    def copy(self) -> RunningHash: ...
    def hexdigest(self) -> str: ...


class ChunkWriter:
    """Writes one chunk into the upload file at *path* from *start*, hashing it into *hasher*.

    The file is open from construction to :meth:`close`. :meth:`rollback` cuts the file back
    to *start* and gives :attr:`hasher` its state from before the chunk.
    """

    def __init__(self, path: str | Path, start: int, hasher: RunningHash | None = None) -> None:
        self.fd: int | None = os.open(path, os.O_WRONLY)
        self.start = start
        self.written = 0
        self.hasher = hasher
        self._hash_at_start = hasher.copy() if hasher is not None else None

    def file_size(self) -> int:
        assert self.fd is not None
        return os.fstat(self.fd).st_size

    def write(self, data: bytes | memoryview) -> None:
        """Write all of *data* after what this chunk has written; ``OSError`` if the disk refuses."""
        assert self.fd is not None
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, self.start + self.written)
            if self.hasher is not None:
                self.hasher.update(view[:n])
            self.written += n
            view = view[n:]

    def rollback(self) -> None:
        """Undo the chunk: the file ends at *start* again, the hash is as it was."""
        assert self.fd is not None
        self.written = 0
        if self._hash_at_start is not None:
            self.hasher = self._hash_at_start.copy()
        os.ftruncate(self.fd, self.start)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
