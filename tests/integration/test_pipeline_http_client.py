"""The HTTP service client (treq) against a real twisted.web server on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from kraken.core.tls import ServerTLS
from kraken.pipeline.clients.base import ClientContext, ClientError
from kraken.pipeline.clients.http import HttpClient
from kraken.pipeline.clients.outbound import OutboundPolicy
from tests.support import tls_settings


class Recorder(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, Any]] = []
        self.held: list[Request] = []

    def render(self, request: Request) -> Any:
        self.seen.append(
            {
                "method": request.method.decode(),
                "path": request.path.decode(),
                "uri": request.uri.decode(),
                "headers": {
                    k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()
                },
                "body": request.content.read().decode(),
            }
        )
        if request.path.endswith(b"/slow"):
            return NOT_DONE_YET
        if request.path.endswith(b"/hold"):
            self.held.append(request)
            return NOT_DONE_YET
        request.setResponseCode(404 if request.path.endswith(b"/missing") else 200)
        request.setHeader(b"X-Reply", b"yes")
        return json.dumps({"path": request.path.decode()}).encode()


@pytest_twisted.inlineCallbacks
def test_requests_bodies_params_headers_and_errors() -> Any:
    recorder = Recorder()
    port = reactor.listenTCP(0, Site(recorder), interface="127.0.0.1")
    allow = OutboundPolicy([f"127.0.0.1:{port.getHost().port}"])
    client = HttpClient(ClientContext(reactor, outbound=allow), "svc")
    try:
        state = client.start(
            {
                "base_url": f"http://127.0.0.1:{port.getHost().port}/api/",
                "headers": {"Accept": "application/json"},
                "timeout": 0.5,
            }
        )
        assert state["pool_size"] == 10 and state["name"] == "Elixir.Octopus.Services.Svc"
        result = yield client.call(
            {
                "method": "post",
                "path": "items",
                "params": {"q": "a b", "none": None, "n": 2},
                "headers": {"X-Trace": "t1"},
                "body": {"k": [1, 2]},
            },
            {"parse_json_body": True},
        )
        assert result["status"] == 200 and result["body"] == {"path": "/api/items"}
        assert result["headers"]["x-reply"] == "yes"
        seen = recorder.seen[-1]
        assert seen["method"] == "POST" and seen["uri"] == "/api/items?q=a+b&none=&n=2"
        assert seen["headers"]["accept"] == "application/json" and seen["headers"]["x-trace"] == "t1"
        assert (
            json.loads(seen["body"]) == {"k": [1, 2]}
            and seen["headers"]["content-type"] == "application/json"
        )
        assert seen["headers"]["content-length"] == str(len(seen["body"]))
        raw = yield client.call({"method": "GET", "path": "/missing", "body": "ignored"}, {})
        assert raw["status"] == 404 and raw["body"] == '{"path": "/api/missing"}'
        assert recorder.seen[-1]["body"] == ""
        text = yield client.call({"method": "PUT", "body": "plain"}, {})
        assert text["status"] == 200 and recorder.seen[-1]["body"] == "plain"
        slow = yield client.call({"path": "/slow"}, {"timeout": 0.2})
        assert isinstance(slow, ClientError) and slow.message == "timeout"
    finally:
        yield client.stop({})
        yield port.stopListening()
        for call in reactor.getDelayedCalls():
            if "slow" in repr(call):
                call.cancel()
    yield defer.succeed(None)


@pytest_twisted.inlineCallbacks
def test_pool_size_bounds_concurrent_requests() -> Any:
    recorder = Recorder()
    port = reactor.listenTCP(0, Site(recorder), interface="127.0.0.1")
    allow = OutboundPolicy([f"127.0.0.1:{port.getHost().port}"])
    client = HttpClient(ClientContext(reactor, outbound=allow), "svc")
    try:
        client.start({"base_url": f"http://127.0.0.1:{port.getHost().port}", "pool_size": 2})
        calls = [client.call({"path": "/hold"}, {}) for _ in range(4)]
        yield deferLater(reactor, 0.3, lambda: None)
        assert len(recorder.held) == 2
        for request in recorder.held[:2]:
            request.write(b"{}")
            request.finish()
        yield deferLater(reactor, 0.3, lambda: None)
        assert len(recorder.held) == 4
        for request in recorder.held[2:]:
            request.write(b"{}")
            request.finish()
        results = yield defer.gatherResults(calls)
        assert [r["status"] for r in results] == [200] * 4
    finally:
        yield client.stop({})
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_https_with_our_certificate_goes_through_the_allow_list(pki: Path) -> Any:
    """``tls: true`` connects to the checked address and still verifies the server's name."""
    recorder = Recorder()
    server_tls = ServerTLS(tls_settings(pki, "origin"))
    port = reactor.listenSSL(0, Site(recorder), server_tls, interface="127.0.0.1")
    number = port.getHost().port
    allow = OutboundPolicy([f"localhost:{number}"])
    ctx = ClientContext(reactor, tls=tls_settings(pki, "pipeline"), outbound=allow)
    client = HttpClient(ctx, "svc")
    try:
        tls = {"tls": True, "roles": ["origin"], "timeout": 5}
        client.start({"base_url": f"https://localhost:{number}", **tls})
        result = yield client.call({"path": "/x"}, {"parse_json_body": True})
        assert result["status"] == 200 and result["body"] == {"path": "/x"}
        refused = HttpClient(ctx, "other")
        refused.start({"base_url": f"https://127.0.0.1:{number}", **tls})
        outside = yield refused.call({"path": "/x"}, {})
        assert isinstance(outside, ClientError) and outside.error == "outbound_refused"
        yield refused.stop({})
    finally:
        yield client.stop({})
        yield port.stopListening()


class Flood(Resource):
    """Answers /declared with a Content-Length over the limit, /streamed with a chunked flood."""

    isLeaf = True

    def render(self, request: Request) -> Any:
        if request.path == b"/declared":
            request.setHeader(b"content-length", b"100000000")
            request.write(b"x" * 1000)
            return NOT_DONE_YET
        for _ in range(100):
            request.write(b"y" * 10_000)
        request.finish()
        return NOT_DONE_YET


@pytest_twisted.inlineCallbacks
def test_response_bodies_over_the_limit_are_refused_as_they_arrive(monkeypatch: Any) -> Any:
    from kraken.pipeline.clients import http

    monkeypatch.setattr(http, "MAX_BODY", 50_000)
    port = reactor.listenTCP(0, Site(Flood()), interface="127.0.0.1")
    allow = OutboundPolicy([f"127.0.0.1:{port.getHost().port}"])
    client = HttpClient(ClientContext(reactor, outbound=allow), "svc")
    try:
        client.start({"base_url": f"http://127.0.0.1:{port.getHost().port}", "timeout": 5})
        for path in ("/declared", "/streamed"):
            try:
                yield client.call({"path": path}, {})
            except ValueError as e:
                assert "over 50000 bytes" in str(e)
            else:
                raise AssertionError(f"{path}: a body over the limit was accepted")
    finally:
        yield client.stop({})
        yield port.stopListening()
