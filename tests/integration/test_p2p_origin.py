"""The origin as a real twistd process: chunked upload, reads, backend fetch, refusals."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest_twisted

from kraken.core.digest import Digest
from kraken.p2p.origins import OriginClient
from tests.integration.p2p_fixtures import anonymous_client, client, origin_config, sleep
from tests.support import tls_settings


@pytest_twisted.inlineCallbacks
def test_upload_read_metainfo_and_refusals(servers: Any, pki: Path, tmp_path: Path) -> Any:
    backend = tmp_path / "backend"
    origin = servers.start("kraken-origin", origin_config(pki, tmp_path / "o", backend), name="origin")
    base = f"127.0.0.1:{origin.port('http')}"
    from twisted.internet import reactor

    data = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "blob"
    src.write_bytes(data)
    d = Digest.of_bytes(data)
    up = OriginClient(reactor, base, tls_settings(pki, "client"), chunk_size=1024 * 1024)
    yield up.upload("test/ns", d, str(src))
    yield up.upload("test/ns", d, str(src))  # 409 "exists" counts as success
    http = client(pki)
    url = f"https://{base}/namespace/test%2Fns/blobs/{d}"
    r = yield http.get(url)
    assert r.code == 200 and (yield r.content()) == data
    r = yield http.get(url + "/metainfo")
    meta = yield r.json()
    assert r.code == 200 and meta["length"] == len(data) and len(meta["piece_hashes"]) == 4
    size = yield up.stat("test/ns", d)
    assert size == len(data)
    r = yield http.get(f"https://{base}/blobs/{d}/locations")
    assert r.headers.getRawHeaders("origin-locations") == [base]
    yield r.content()
    for _ in range(50):  # write-back reaches the backend
        if (backend / d.hex).exists():
            break
        yield sleep(0.1)
    assert (backend / d.hex).read_bytes() == data

    # Unknown blob, bad digest, write without a certificate, wrong role, wrong digest.
    r = yield http.get(f"https://{base}/namespace/ns/blobs/sha256:{'0' * 64}")
    assert r.code == 404 and (yield r.json())["error"]["code"] == "BLOB_UNKNOWN"
    r = yield http.get(f"https://{base}/namespace/ns/blobs/sha256:xyz")
    assert r.code == 400 and "64 lowercase hex" in (yield r.json())["error"]["message"]
    anonymous = anonymous_client(pki)
    other = Digest.of_bytes(b"x")
    r = yield anonymous.post(f"https://{base}/namespace/ns/blobs/{other}/uploads")
    assert r.code == 403 and "client certificate" in (yield r.json())["error"]["message"]
    r = yield client(pki, "agent").post(f"https://{base}/namespace/ns/blobs/{other}/uploads")
    assert r.code == 403 and "'agent' may not write" in (yield r.json())["error"]["message"]
    r = yield http.post(f"https://{base}/namespace/ns/blobs/{other}/uploads")
    uid = r.headers.getRawHeaders("location")[0]
    yield r.content()
    r = yield http.patch(f"https://{base}/namespace/ns/blobs/{other}/uploads/{uid}", data=b"y",
                         headers={"Content-Range": "0-1"})
    assert r.code == 200
    yield r.content()
    r = yield http.put(f"https://{base}/namespace/ns/blobs/{other}/uploads/{uid}")
    assert r.code == 400 and (yield r.json())["error"]["code"] == "DIGEST_INVALID"
    r = yield http.patch(f"https://{base}/namespace/ns/blobs/{other}/uploads/{uid}", data=b"y",
                         headers={"Content-Range": "0-5"})
    assert r.code == 400
    yield r.content()


@pytest_twisted.inlineCallbacks
def test_blob_only_in_backend_is_fetched_202_then_200(servers: Any, pki: Path, tmp_path: Path) -> Any:
    backend = tmp_path / "backend"
    backend.mkdir()
    data = os.urandom(2 * 1024 * 1024)
    d = Digest.of_bytes(data)
    (backend / d.hex).write_bytes(data)
    origin = servers.start("kraken-origin", origin_config(pki, tmp_path / "o", backend), name="origin")
    http = client(pki)
    url = f"https://127.0.0.1:{origin.port('http')}/namespace/ns/blobs/{d}"
    r = yield http.get(url)
    codes = [r.code]
    yield r.content()
    while codes[-1] == 202 and len(codes) < 100:
        yield sleep(0.05)
        r = yield http.get(url)
        codes.append(r.code)
        body = yield r.content()
    assert codes[0] == 202 and codes[-1] == 200, codes
    assert body == data
