"""The shared HTTP layer over a real loopback socket: routing, JSON errors, /health, /metrics."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor, task

from kraken.core.http import HTTPError, Response, Router, make_site, read_json
from kraken.core.metrics import Metrics


@pytest.fixture
def site_url() -> Any:
    metrics = Metrics("demo")
    hits = metrics.counter("hits_total", "requests to /items", ["kind"])
    healthy = {"store": True}
    router = Router()

    def get_item(request: Any, repo: str, ref: str) -> Any:
        hits.labels("get").inc()
        if ref == "missing":
            raise HTTPError(404, "ITEM_UNKNOWN", f"no item {ref} in {repo}")
        if ref == "boom":
            raise RuntimeError("secret internal detail")
        return {"repo": repo, "ref": ref}

    def put_item(request: Any, repo: str, ref: str) -> Any:
        body = read_json(request)
        return task.deferLater(
            reactor, 0.01, lambda: Response(201, {"stored": body}, {"Location": f"/v2/{repo}"})
        )

    router.route("GET", "/v2/{repo:path}/items/{ref}", get_item)
    router.route("PUT", "/v2/{repo:path}/items/{ref}", put_item)
    router.route(
        "GET",
        "/raw",
        lambda request: Response(200, b"\x00bytes", {"Content-Type": "application/octet-stream"}),
    )
    site = make_site(router, metrics, {"store": lambda: healthy["store"]})
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}", healthy
    port.stopListening()


@defer.inlineCallbacks
def fetch(method: str, url: str, **kwargs: Any) -> Any:
    response = yield treq.request(method, url, persistent=False, **kwargs)
    body = yield response.content()
    return response, body


@pytest_twisted.inlineCallbacks
def test_routes_with_slashes_in_names(site_url: Any) -> Any:
    url, _ = site_url
    response, body = yield fetch("GET", url + "/v2/test/alpine/items/v1")
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == ["application/json"]
    assert json.loads(body) == {"repo": "test/alpine", "ref": "v1"}


@pytest_twisted.inlineCallbacks
def test_errors_are_uniform_json_and_hide_internals(site_url: Any) -> Any:
    url, _ = site_url
    response, body = yield fetch("GET", url + "/v2/a/items/missing")
    assert (response.code, json.loads(body)) == (
        404,
        {"error": {"code": "ITEM_UNKNOWN", "message": "no item missing in a"}},
    )
    response, body = yield fetch("GET", url + "/v2/a/items/boom")
    assert response.code == 500
    assert json.loads(body)["error"]["code"] == "INTERNAL"
    assert b"secret" not in body
    response, body = yield fetch("GET", url + "/nowhere")
    assert response.code == 404 and json.loads(body)["error"]["code"] == "NOT_FOUND"
    response, body = yield fetch("DELETE", url + "/v2/a/items/x")
    assert response.code == 405
    assert response.headers.getRawHeaders("allow") == ["GET, PUT"]


@pytest_twisted.inlineCallbacks
def test_deferred_handlers_json_bodies_and_head(site_url: Any) -> Any:
    url, _ = site_url
    response, body = yield fetch("PUT", url + "/v2/a/b/items/x", data=b'{"k": [1, 2]}')
    assert response.code == 201
    assert json.loads(body) == {"stored": {"k": [1, 2]}}
    assert response.headers.getRawHeaders("location") == ["/v2/a/b"]
    response, body = yield fetch("PUT", url + "/v2/a/items/x", data=b"{nope")
    assert response.code == 400 and json.loads(body)["error"]["code"] == "BAD_JSON"
    response, body = yield fetch("HEAD", url + "/v2/a/items/x")
    assert response.code == 200 and body == b""
    assert response.headers.getRawHeaders("content-length") == [str(len(b'{"repo":"a","ref":"x"}'))]
    response, body = yield fetch("GET", url + "/raw")
    assert body == b"\x00bytes"


@pytest_twisted.inlineCallbacks
def test_health_and_metrics(site_url: Any) -> Any:
    url, healthy = site_url
    response, body = yield fetch("GET", url + "/health")
    assert (response.code, json.loads(body)) == (200, {"status": "ok"})
    healthy["store"] = False
    response, body = yield fetch("GET", url + "/health")
    assert (response.code, json.loads(body)) == (503, {"status": "unhealthy", "failing": ["store"]})
    yield fetch("GET", url + "/v2/a/items/x")
    response, body = yield fetch("GET", url + "/metrics")
    assert response.code == 200
    assert b'kraken_demo_hits_total{kind="get"} 1.0' in body
