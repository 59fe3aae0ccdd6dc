"""Origin PATCH bodies stream into the upload file: a real Site and HTTPChannel fed in memory."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from OpenSSL import crypto
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.http import HTTPChannel
from twisted.web.server import Site

from kraken.backends.base import BackendRouter
from kraken.core.cas import CAStore
from kraken.core.digest import Digest
from kraken.core.http import make_site
from kraken.core.httplimits import LimitedChannel
from kraken.core.metrics import Metrics
from kraken.origin.blobs import OriginBlobs
from kraken.origin.server import OriginAPI
from kraken.origin.uploads import PatchSink, RefusedBody

MiB = 1024 * 1024
DIGEST = Digest.of_bytes(b"whatever")


class CertifiedTransport(StringTransport):
    """An in-memory transport whose peer presented *cert* in a TLS handshake."""

    def __init__(self, cert: crypto.X509 | None) -> None:
        super().__init__()
        self.cert = cert

    def getPeerCertificate(self) -> crypto.X509 | None:
        return self.cert


class Origin:
    def __init__(self, root: Path, pki: Path, max_upload_size: int = 1 << 40, streaming: bool = True) -> None:
        self.cas = CAStore(root / "store")
        blobs = OriginBlobs(Clock(), self.cas, BackendRouter([]), {0: MiB}, Metrics(f"u{id(self)}"))
        self.api = OriginAPI(blobs, lambda: None, lambda: "", dict, {"client"}, None, max_upload_size)
        router = self.api if streaming else None
        self.site: Site = make_site(self.api.router(), Metrics(f"s{id(self)}"), body_router=router)
        self.cert = crypto.load_certificate(crypto.FILETYPE_PEM, (pki / "client.pem").read_bytes())

    def connect(self, certified: bool = True) -> tuple[HTTPChannel, CertifiedTransport]:
        channel = LimitedChannel()  # the channel of every make_site site, built here to reach its requests
        channel.site = self.site
        channel.requestFactory = self.site.requestFactory
        transport = CertifiedTransport(self.cert if certified else None)
        channel.makeConnection(transport)
        return channel, transport

    def patch_head(self, channel: HTTPChannel, uid: str, content_range: str, length: int) -> Any:
        channel.dataReceived(
            f"PATCH /namespace/ns/blobs/{DIGEST}/uploads/{uid} HTTP/1.1\r\nHost: o\r\n"
            f"Content-Length: {length}\r\nContent-Range: {content_range}\r\n\r\n".encode()
        )
        return channel.requests[-1]

    def patch(self, uid: str, content_range: str, body: bytes, certified: bool = True) -> tuple[int, Any]:
        channel, transport = self.connect(certified)
        self.patch_head(channel, uid, content_range, len(body))
        channel.dataReceived(body)
        return answer(transport)


def answer(transport: StringTransport) -> tuple[int, Any]:
    head, _, body = transport.value().partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


@pytest.fixture
def origin(tmp_path: Path, pki: Path) -> Origin:
    return Origin(tmp_path, pki)


def test_64_mib_patch_goes_to_the_upload_file_as_it_arrives(origin: Origin) -> None:
    uid = origin.cas.start_upload()
    path = origin.cas.upload_path(uid)
    channel, transport = origin.connect()
    request = origin.patch_head(channel, uid, f"0-{64 * MiB}", 64 * MiB)
    sink = request.content
    assert isinstance(sink, PatchSink)  # chosen from the headers, before any body byte
    hasher = hashlib.sha256()
    tracemalloc.start()
    try:
        for i in range(64):
            chunk = bytes([i]) * MiB
            hasher.update(chunk)
            channel.dataReceived(chunk)
            del chunk
            assert path.stat().st_size == (i + 1) * MiB
            assert request.content is sink or i == 63  # the last chunk ends the request
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MiB  # a buffered body would hold all 64 MiB
    assert answer(transport) == (200, {"uid": uid, "received": 64 * MiB})
    assert hashlib.sha256(path.read_bytes()).digest() == hasher.digest()
    assert origin.api.uploads.busy == set()


def test_chunks_must_continue_the_upload(origin: Origin) -> None:
    uid = origin.cas.start_upload()
    assert origin.patch(uid, "0-10", b"0123456789") == (200, {"uid": uid, "received": 10})
    channel, transport = origin.connect()
    request = origin.patch_head(channel, uid, "5-15", 10)
    assert isinstance(request.content, RefusedBody)
    channel.dataReceived(b"x" * 10)
    status, body = answer(transport)
    assert status == 416 and body["error"]["code"] == "RANGE_INVALID"
    assert body["error"]["detail"] == {"offset": 10}
    assert origin.cas.upload_path(uid).read_bytes() == b"0123456789"
    assert origin.patch(uid, "10-13", b"abc")[0] == 200
    assert origin.cas.upload_path(uid).read_bytes() == b"0123456789abc"


def test_size_limit_writer_check_and_unknown_upload(tmp_path: Path, pki: Path) -> None:
    origin = Origin(tmp_path, pki, max_upload_size=100)
    uid = origin.cas.start_upload()
    status, body = origin.patch(uid, "0-101", b"y" * 101)
    assert status == 413 and body["error"]["code"] == "SIZE_INVALID"
    status, body = origin.patch(uid, "0-5", b"hello", certified=False)
    assert status == 403 and "client certificate" in body["error"]["message"]
    status, body = origin.patch("f" * 32, "0-5", b"hello")
    assert status == 404 and body["error"]["code"] == "UPLOAD_UNKNOWN"
    status, body = origin.patch(uid, "0-9", b"hello")
    assert status == 400 and body["error"]["code"] == "BAD_RANGE"
    assert origin.cas.upload_path(uid).stat().st_size == 0
    assert origin.patch(uid, "0-100", b"z" * 100)[0] == 200


def test_lost_connection_undoes_the_chunk_and_frees_the_upload(origin: Origin) -> None:
    uid = origin.cas.start_upload()
    assert origin.patch(uid, "0-4", b"keep")[0] == 200
    channel, _ = origin.connect()
    origin.patch_head(channel, uid, "4-1004", 1000)
    channel.dataReceived(b"p" * 600)
    assert origin.cas.upload_path(uid).stat().st_size == 604
    second = origin.patch(uid, "4-5", b"q")  # one writer per upload
    assert second[0] == 409 and second[1]["error"]["code"] == "UPLOAD_BUSY"
    channel.connectionLost(None)
    assert origin.cas.upload_path(uid).read_bytes() == b"keep"
    assert origin.patch(uid, "4-6", b"ok")[0] == 200
    assert origin.cas.upload_path(uid).read_bytes() == b"keepok"


def test_chunked_body_must_fill_its_range(origin: Origin) -> None:
    uid = origin.cas.start_upload()
    channel, transport = origin.connect()
    channel.dataReceived(
        f"PATCH /internal/blobs/{DIGEST}/uploads/{uid} HTTP/1.1\r\nHost: o\r\n"
        "Transfer-Encoding: chunked\r\nContent-Range: 0-8\r\n\r\n5\r\nhello\r\n0\r\n\r\n".encode()
    )
    status, body = answer(transport)
    assert status == 400 and "body of 5 bytes" in body["error"]["message"]
    assert origin.cas.upload_path(uid).stat().st_size == 0 and origin.api.uploads.busy == set()


def test_other_requests_and_sites_keep_the_buffered_body(tmp_path: Path, pki: Path) -> None:
    origin = Origin(tmp_path, pki)
    uid = origin.cas.start_upload()
    for head in (f"POST /namespace/ns/blobs/{DIGEST}/uploads", f"PUT /internal/blobs/{DIGEST}/uploads/{uid}",
                 f"PATCH /namespace/ns/blobs/{DIGEST}/metainfo"):
        channel, _ = origin.connect()
        channel.dataReceived(f"{head} HTTP/1.1\r\nHost: o\r\nContent-Length: 3\r\n\r\n".encode())
        assert isinstance(channel.requests[-1].content, BytesIO)  # twisted.web's own buffer
    buffered = Origin(tmp_path / "plain", pki, streaming=False)
    uid = buffered.cas.start_upload()
    assert buffered.patch(uid, "0-3", b"abc") == (200, {"uid": uid, "received": 3})
    assert buffered.patch(uid, "0-3", b"abc")[0] == 416
    assert buffered.cas.upload_path(uid).read_bytes() == b"abc"
