"""kraken.core.sendfile: blob bodies sent by the producer (the sendfile path runs in integration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.web.test.requesthelper import DummyRequest

from kraken.core.sendfile import FileRangeProducer, send_body


@pytest.mark.parametrize(("start", "length", "body"), [(2, 5, b"23456"), (0, 0, b"")])
def test_send_body_sends_the_slice_and_finishes(tmp_path: Path, start: int, length: int, body: bytes) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"0123456789")
    request = DummyRequest([b""])
    f = open(path, "rb")
    assert send_body(request, f, start, length, None) == "stream"
    assert b"".join(request.written) == body
    assert request.finished == 1 and f.closed


class PausingRequest:
    """Pauses its producer after every write, as a full transport buffer does."""

    def __init__(self) -> None:
        self.producer: Any = None
        self.written: list[bytes] = []
        self.finished = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.producer.pauseProducing()

    def finish(self) -> None:
        self.finished = True


def started(tmp_path: Path, start: int, length: int) -> tuple[PausingRequest, FileRangeProducer, Any]:
    """A producer of ``abcdefgh`` reading 4 bytes at a time, started on a PausingRequest."""
    path = tmp_path / "blob"
    path.write_bytes(b"abcdefgh")
    request = PausingRequest()
    f = open(path, "rb")
    producer = FileRangeProducer(request, f, start, length)
    producer.read_size = 4
    producer.start()
    return request, producer, f


def test_producer_reads_one_block_per_resume(tmp_path: Path) -> None:
    request, producer, f = started(tmp_path, 1, 6)
    assert request.written == [b"bcde"] and not request.finished
    producer.resumeProducing()
    assert request.written == [b"bcde", b"fg"] and request.finished and f.closed


def test_stop_producing_closes_the_file(tmp_path: Path) -> None:
    request, producer, f = started(tmp_path, 0, 8)
    producer.stopProducing()
    assert f.closed and not request.finished
