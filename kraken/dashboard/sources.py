"""The servers a dashboard watches, and one HTTP(S) client that reads them.

Every server is named by a URL; over ``https://`` the dashboard presents its own certificate
(role ``client``) and requires the server's certificate to name the role of its kind, so a
dashboard pointed at the wrong port fails the handshake instead of showing another server's
data. Answers are read with the core's limits (:func:`kraken.core.httpclient.json_body`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks

from kraken.core.httpclient import PooledHTTPClient, json_body, make_http_client, read_body
from kraken.core.reactor import IServerReactor
from kraken.core.tls import TLSSettings

# The role each kind of server presents on its HTTP API.
KIND_ROLES = {
    "agent": "agent",
    "origin": "origin",
    "tracker": "tracker",
    "build-index": "build-index",
    "proxy": "proxy",
    "state": "state",
    "pipeline": "pipeline",
    "pubsub": "pubsub",
}
MAX_TEXT = 4 * 1024 * 1024  # a /metrics page


@dataclass(frozen=True)
class Server:
    kind: str
    url: str

    @property
    def name(self) -> str:
        return f"{self.kind} {urlsplit(self.url).netloc}"

    @property
    def role(self) -> str:
        return KIND_ROLES[self.kind]


def parse_server(kind: str, text: str) -> Server:
    """A server of *kind* at *text* (``http(s)://host:port``, or ``host:port`` meaning https)."""
    if kind not in KIND_ROLES:
        raise ValueError(f"unknown server kind {kind!r}")
    url = text if "://" in text else f"https://{text}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise ValueError(f"{kind}: {text!r} is not http(s)://host:port")
    return Server(kind, url.rstrip("/"))


class Unavailable(Exception):
    """The server has no such endpoint (404 or 405 on a route): an older or other build."""


class FetchError(Exception):
    """The server could not be read: unreachable, refused, an error status or an unusable body."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _error_text(body: bytes) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return str(parsed["error"].get("message", parsed["error"]))[:300]
    if isinstance(parsed, dict) and "error" in parsed:
        return str(parsed["error"])[:300]
    return body[:200].decode("utf-8", "replace")


class Fetcher:
    """Reads (and, for operators' actions, writes) the servers' HTTP APIs."""

    def __init__(
        self,
        reactor: IServerReactor,
        tls: TLSSettings | None,
        timeout: float = 5.0,
        bearer: dict[str, str] | None = None,
    ) -> None:
        self.reactor = reactor
        self.tls = tls
        self.timeout = timeout
        self.bearer = bearer or {}  # kind -> token the dashboard sends that kind of server
        self.clients: dict[str, PooledHTTPClient] = {}

    def _client(self, server: Server) -> PooledHTTPClient:
        client = self.clients.get(server.role)
        if client is None:
            client = self.clients[server.role] = make_http_client(self.reactor, self.tls, {server.role})
        return client

    def _headers(self, server: Server) -> dict[bytes | str, list[bytes | str]]:
        token = self.bearer.get(server.kind)
        return {"Authorization": [f"Bearer {token}"]} if token else {}

    @inlineCallbacks
    def _request(
        self, server: Server, method: str, path: str, body: Any = None, accept: str | None = None
    ) -> Any:
        client = self._client(server)
        url = server.url + path
        headers = self._headers(server)
        if accept is not None:
            headers["Accept"] = [accept]
        try:
            if body is None:
                response = yield client.request(method, url, headers=headers, timeout=self.timeout)
            else:
                data = json.dumps(body).encode()
                headers["Content-Type"] = ["application/json"]
                response = yield client.request(method, url, data=data, headers=headers, timeout=self.timeout)
        except Exception as e:
            raise FetchError(f"{server.name} unreachable: {e.__class__.__name__}: {str(e)[:200]}") from None
        return response

    @inlineCallbacks
    def _checked(
        self, server: Server, method: str, path: str, body: Any = None, accept: str | None = None
    ) -> Any:
        response = yield self._request(server, method, path, body, accept)
        if response.code in (404, 405):
            raw = yield read_body(response, server.name, 64 * 1024)
            if (method == "GET" and b'"NOT_FOUND"' in raw) or response.code == 405:
                raise Unavailable(f"{path} is not available on this server")
            raise FetchError(f"{method} {path}: {response.code} {_error_text(raw)}", response.code)
        if response.code >= 300:
            raw = yield read_body(response, server.name, 64 * 1024)
            raise FetchError(f"{method} {path}: {response.code} {_error_text(raw)}", response.code)
        return response

    @inlineCallbacks
    def get_json(self, server: Server, path: str, accept: str | None = None) -> Any:
        response = yield self._checked(server, "GET", path, accept=accept)
        try:
            return (yield json_body(response, server.name))
        except ValueError as e:
            raise FetchError(str(e)) from None

    @inlineCallbacks
    def get_text(self, server: Server, path: str, limit: int = MAX_TEXT) -> Any:
        response = yield self._checked(server, "GET", path)
        try:
            raw = yield read_body(response, server.name, limit)
        except ValueError as e:
            raise FetchError(str(e)) from None
        return raw.decode("utf-8", "replace")

    @inlineCallbacks
    def send_json(self, server: Server, method: str, path: str, body: Any) -> Any:
        response = yield self._checked(server, method, path, body)
        try:
            return (yield json_body(response, server.name))
        except ValueError as e:
            raise FetchError(str(e)) from None

    def close(self) -> Deferred[Any]:
        return DeferredList([c.close() for c in self.clients.values()])
