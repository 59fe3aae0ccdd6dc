"""Streamed upload PATCHes on a real origin: out-of-order and oversized chunks, then a 40 MiB upload."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest_twisted

from kraken.core.digest import Digest
from kraken.p2p.origins import OriginClient
from tests.integration.p2p_fixtures import client, origin_config
from tests.support import tls_settings

MiB = 1024 * 1024


@pytest_twisted.inlineCallbacks
def test_patch_offsets_size_limit_and_a_large_upload(servers: Any, pki: Path, tmp_path: Path) -> Any:
    from twisted.internet import reactor

    config = origin_config(pki, tmp_path / "o", max_upload_size=48 * MiB)
    origin = servers.start("kraken-origin", config, name="origin")
    base = f"127.0.0.1:{origin.port('http')}"
    http = client(pki)
    other = Digest.of_bytes(b"other")
    uploads = f"https://{base}/namespace/ns/blobs/{other}/uploads"
    r = yield http.post(uploads)
    uid = r.headers.getRawHeaders("location")[0]
    yield r.content()

    r = yield http.patch(f"{uploads}/{uid}", data=b"abc", headers={"Content-Range": "0-3"})
    assert r.code == 200 and (yield r.json())["received"] == 3
    r = yield http.patch(f"{uploads}/{uid}", data=b"abc", headers={"Content-Range": "0-3"})
    error = (yield r.json())["error"]
    assert r.code == 416 and error["code"] == "RANGE_INVALID" and error["detail"] == {"offset": 3}
    too_far = 48 * MiB + 1  # the chunk continues the upload but would grow it past the limit
    body = b"x" * (too_far - 3)
    r = yield http.patch(f"{uploads}/{uid}", data=body, headers={"Content-Range": f"3-{too_far}"})
    assert r.code == 413 and (yield r.json())["error"]["code"] == "SIZE_INVALID"
    upload_file = tmp_path / "o" / "store" / "upload" / uid
    assert upload_file.read_bytes() == b"abc"

    data = os.urandom(40 * MiB)
    src = tmp_path / "big"
    src.write_bytes(data)
    d = Digest.of_bytes(data)
    uploader = OriginClient(reactor, base, tls_settings(pki, "client"), chunk_size=16 * MiB)
    yield uploader.upload("ns", d, str(src))
    r = yield http.get(f"https://{base}/namespace/ns/blobs/{d}")
    assert r.code == 200 and Digest.of_bytes((yield r.content())) == d
