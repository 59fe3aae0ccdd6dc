"""The registry resource in-process over loopback: error envelopes, the read-only agent storage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed

from kraken.agent.registry import AgentStorage, make_agent_registry
from kraken.backends.base import BlobNotFound
from kraken.core.metrics import Metrics
from kraken.registry.api import RegistryResource
from kraken.registry.site import make_registry_site

BLOB = b"some layer bytes"
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


class FakeBlobs:
    """The agent's ``blobs.fetch`` contract: a path, BlobNotFound, or another failure."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "blob"
        self.path.write_bytes(BLOB)
        self.calls: list[tuple[str, str]] = []

    def fetch(self, namespace: str, digest: str) -> Deferred[str]:
        self.calls.append((namespace, digest))
        if digest == DIGEST:
            return succeed(str(self.path))
        if digest.endswith("e" * 64):
            return fail(RuntimeError("tracker unreachable"))
        return fail(BlobNotFound(digest))


class BrokenStorage(AgentStorage):
    def resolve_tag(self, name: str, tag: str) -> Deferred[str | None]:
        return fail(ZeroDivisionError("a bug"))


@pytest.fixture
def serve() -> Any:
    ports: list[Any] = []

    def listen(site: Any) -> str:
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        ports.append(port)
        return f"http://127.0.0.1:{port.getHost().port}"

    yield listen
    for port in ports:
        port.stopListening()


async def _get(url: str, method: str = "GET", **kwargs: Any) -> tuple[int, Any, bytes]:
    response = await treq.request(method, url, persistent=False, **kwargs)
    body = await response.content()
    return response.code, response.headers, body


@pytest_twisted.ensureDeferred
async def test_agent_storage_over_http(serve: Any, tmp_path: Path) -> None:
    blobs = FakeBlobs(tmp_path)
    base = serve(make_agent_registry(blobs, None, [], None, Metrics("t1"), reactor))
    code, headers, body = await _get(f"{base}/v2/test/x/blobs/{DIGEST}")
    assert code == 200 and body == BLOB
    assert headers.getRawHeaders("docker-content-digest") == [DIGEST]
    assert blobs.calls[-1] == ("test/x", DIGEST)  # namespace = repository
    code, headers, _ = await _get(f"{base}/v2/test/x/blobs/{DIGEST}", "HEAD")
    assert code == 200 and headers.getRawHeaders("content-length") == [str(len(BLOB))]

    code, _, body = await _get(f"{base}/v2/test/x/blobs/sha256:{'0' * 64}")
    assert code == 404 and json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"
    code, _, body = await _get(f"{base}/v2/test/x/blobs/sha256:{'e' * 64}")
    assert code == 503 and json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"
    assert b"tracker unreachable" in body and b"Traceback" not in body
    code, _, body = await _get(f"{base}/v2/test/x/blobs/sha256:nothex")
    assert code == 400 and json.loads(body)["errors"][0]["code"] == "DIGEST_INVALID"
    code, _, body = await _get(f"{base}/v2/test/x/manifests/v1")
    assert code == 404 and b"build-index" in body

    for method, path in [("POST", "/v2/test/x/blobs/uploads/"), ("PUT", "/v2/test/x/manifests/v1"),
                         ("PATCH", "/v2/test/x/blobs/uploads/abc"), ("DELETE", f"/v2/test/x/blobs/{DIGEST}")]:
        code, _, body = await _get(base + path, method, data=b"x")
        assert code == 405, (method, path)
        error = json.loads(body)["errors"][0]
        assert error["code"] == "UNSUPPORTED"

    code, _, body = await _get(f"{base}/v2/NotValid/blobs/{DIGEST}")
    assert code == 400 and json.loads(body)["errors"][0]["code"] == "NAME_INVALID"
    code, _, body = await _get(f"{base}/v2/test/x/nothing")
    assert code == 404 and json.loads(body)["errors"][0]["code"] == "NOT_FOUND"
    code, _, body = await _get(f"{base}/health")
    assert code == 200


@pytest_twisted.ensureDeferred
async def test_unexpected_errors_become_an_envelope_without_traceback(serve: Any, tmp_path: Path) -> None:
    api = RegistryResource(BrokenStorage(FakeBlobs(tmp_path), None), None, Metrics("t2"))
    base = serve(make_registry_site(api, Metrics("t2b")))
    code, _, body = await _get(f"{base}/v2/test/x/manifests/v1")
    assert code == 500
    error = {"code": "UNKNOWN", "message": "internal error; see the server log"}
    assert json.loads(body) == {"errors": [error]}
    assert b"ZeroDivision" not in body


@pytest_twisted.ensureDeferred
async def test_cidr_allow_list(serve: Any, tmp_path: Path) -> None:
    blobs = FakeBlobs(tmp_path)
    allowed = serve(make_agent_registry(blobs, None, ["127.0.0.0/8"], None, Metrics("t3"), reactor))
    denied = serve(make_agent_registry(blobs, None, ["10.0.0.0/8", "::1/128"], None, Metrics("t4"), reactor))
    assert (await _get(f"{allowed}/v2/"))[0] == 200
    code, _, body = await _get(f"{denied}/v2/")
    assert code == 403 and json.loads(body)["errors"][0]["code"] == "DENIED"
