"""Upload PATCH bodies written straight into the upload file, chunk by chunk, as they arrive.

An upload is a file in the CAS upload area; its size is the offset the next chunk must start
at. Every check (writer, digest, range, offset, size limit) runs when the headers are in,
before the first body byte is accepted. A chunk lands completely or not at all: a short,
long or interrupted body is cut off again at the chunk's start.
"""

from __future__ import annotations

import re

from twisted.logger import Logger

from kraken.core.cas import CAStore, UnknownUpload
from kraken.core.http import HTTPError
from kraken.core.streaming import BodySink
from kraken.core.uploads import ChunkWriter

log = Logger(namespace="kraken.origin.uploads")
_RANGE = re.compile(r"^(?:bytes[ =])?(\d{1,19})-(\d{1,19})$")


def parse_range(header: str | None, length: int | None) -> tuple[int, int]:
    """``(start, end)`` of ``Content-Range: START-END`` (END exclusive), checked against *length*."""
    m = _RANGE.match((header or "").strip())
    if not m:
        raise HTTPError(400, "BAD_RANGE", "Content-Range must be 'START-END' (END exclusive)")
    start, end = int(m.group(1)), int(m.group(2))
    if end < start or (length is not None and end - start != length):
        raise HTTPError(400, "BAD_RANGE", f"range {start}-{end} does not match a body of {length} bytes")
    return start, end


class RefusedBody(BodySink):
    """A body refused as soon as its headers arrived: its bytes are counted and dropped."""

    def __init__(self, error: HTTPError) -> None:
        self.error = error

    def write(self, data: bytes) -> None:
        self.received += len(data)

    def abort(self) -> None:
        pass


class PatchSink(BodySink):
    """One PATCH body, written at ``start`` of the upload file as it arrives."""

    def __init__(self, sessions: UploadSessions, uid: str, writer: ChunkWriter, end: int) -> None:
        self.sessions = sessions
        self.uid = uid
        self.writer: ChunkWriter | None = writer
        self.start = writer.start
        self.end = end
        self.error: HTTPError | None = None

    def write(self, data: bytes) -> None:
        if self.error is not None or self.writer is None:
            self.received += len(data)
            return
        if self.start + self.received + len(data) > self.end:
            self.received += len(data)
            self.error = HTTPError(400, "BAD_RANGE", f"body longer than the range {self.start}-{self.end}")
            self.abort()
            return
        try:
            self.writer.write(data)
        except OSError as e:
            log.error("writing upload {uid} failed: {e}", uid=self.uid, e=e)
            self.error = HTTPError(500, "STORAGE_ERROR", f"could not write the upload: {e.strerror}")
            self.abort()
        finally:
            self.received += len(data)

    def finish(self) -> None:
        """Keep the chunk if it is complete; otherwise undo it and raise the error to answer."""
        if self.error is None and self.start + self.received != self.end:
            message = f"range {self.start}-{self.end} but a body of {self.received} bytes"
            self.error = HTTPError(400, "BAD_RANGE", message)
        if self.error is not None:
            self.abort()
            raise self.error
        self._release()

    def abort(self) -> None:
        """Cut the upload back to where this chunk started."""
        if self.writer is not None:
            try:
                self.writer.rollback()
            except OSError as e:
                log.error("upload {uid} dropped: cannot cut it back: {e}", uid=self.uid, e=e)
                self.sessions.cas.abort_upload(self.uid)
            self._release()

    def close(self) -> None:
        # twisted.web closes the content of every request when it ends: a chunk nobody kept goes.
        self.abort()

    def _release(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.sessions.busy.discard(self.uid)


class UploadSessions:
    """The origin's uploads as far as PATCH needs them: size limit, one writer per upload."""

    def __init__(self, cas: CAStore, max_size: int) -> None:
        self.cas = cas
        self.max_size = max_size
        self.busy: set[str] = set()

    def open_patch(self, uid: str, start: int, end: int) -> PatchSink:
        """A sink for the chunk ``start``-``end`` of *uid*, refused unless it continues the upload."""
        try:
            path = self.cas.upload_path(uid)
        except UnknownUpload:
            raise HTTPError(404, "UPLOAD_UNKNOWN", f"no upload {uid}") from None
        if uid in self.busy:
            raise HTTPError(409, "UPLOAD_BUSY", f"another request is writing to upload {uid}")
        if end > self.max_size:
            raise HTTPError(413, "SIZE_INVALID", f"uploads are limited to {self.max_size} bytes")
        writer = ChunkWriter(path, start)
        offset = writer.file_size()
        if start != offset:
            writer.close()
            message = f"chunk starts at {start} but upload {uid} has {offset} bytes; send {offset}- next"
            raise HTTPError(416, "RANGE_INVALID", message, detail={"offset": offset})
        self.busy.add(uid)
        return PatchSink(self, uid, writer, end)
