"""JSON-over-HTTP client on treq (``OctopusClientHttpFinch`` in the original).

Start config: ``base_url`` (required), ``headers``, ``pool_size`` (10), ``timeout`` (seconds),
``tls`` (true: present our kraken client certificate and trust only our CA), ``roles`` (with
``tls``, required: the certificate roles the server may present, e.g. ``["state"]``).
Prepared arguments: ``method``, ``path``, ``params`` (query string for every method),
``headers``, ``body`` (a string is sent as is; objects and arrays are JSON-encoded).
At most ``pool_size`` requests run at once; more wait for a free slot.
Call config: ``parse_json_body``, ``timeout``. Non-2xx answers are results, not errors;
transport failures are returned as :class:`ClientError` for the service's ``error`` step.
Destinations outside ``pipeline.outbound_allow`` (:mod:`.outbound`) are such a failure,
``outbound_refused``, checked for every request and redirect and at connect time.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import treq
from twisted.internet import defer, error
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, ResponseNeverReceived

from kraken.core import jsonlimits
from kraken.core.httpclient import IDLE_CONNECTION_SECONDS
from kraken.core.jsonlimits import JSONLimitError
from kraken.core.tls import ClientTLSPolicy
from kraken.pipeline.answers import MAX_JSON_DEPTH
from kraken.pipeline.clients.base import Client, ClientError, ClientStartError
from kraken.pipeline.clients.outbound import GuardedAgent, GuardedEndpoints, OutboundRefused
from kraken.pipeline.names import service_module

log = Logger(namespace="kraken.pipeline.clients.http")

MAX_BODY = 16 * 1024 * 1024
_NO_BODY = {"GET", "HEAD", "DELETE", "OPTIONS"}


def _param(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _transport_error(failure: Any) -> ClientError:
    exc = failure.value
    if isinstance(exc, ResponseNeverReceived) and exc.reasons:
        exc = exc.reasons[0].value
    if isinstance(exc, OutboundRefused):
        return ClientError("outbound_refused", str(exc))
    if isinstance(exc, error.DNSLookupError):
        return ClientError("nxdomain", "non-existing domain")
    if isinstance(exc, error.ConnectionRefusedError):
        return ClientError("econnrefused", "connection refused")
    if isinstance(exc, (defer.CancelledError, error.TimeoutError, defer.TimeoutError)):
        return ClientError("timeout", "timeout")
    return ClientError(type(exc).__name__, str(exc) or type(exc).__name__)


class _Discard(Protocol):
    """Drops a response body we refuse, closing the connection."""

    def connectionMade(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()


class HttpClient(Client):
    def start(self, config: dict[str, Any]) -> Any:
        base_url = config.get("base_url")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ClientStartError("base_url must be provided! (an http:// or https:// URL)")
        headers = config.get("headers") or {}
        if not isinstance(headers, dict):
            raise ClientStartError("headers must be an object")
        pool_size = config.get("pool_size", 10)
        if not isinstance(pool_size, int) or pool_size < 1:
            raise ClientStartError("pool_size must be a positive integer")
        self.base_url = base_url
        self.headers = {str(k): str(v) for k, v in headers.items()}
        self.pool_size = pool_size
        self.timeout = float(config.get("timeout") or self.ctx.http_timeout)
        self.slots = defer.DeferredSemaphore(pool_size)  # at most pool_size requests at once
        self.pool = HTTPConnectionPool(self.ctx.reactor, persistent=True)
        self.pool.maxPersistentPerHost = pool_size
        self.pool.cachedConnectionTimeout = IDLE_CONNECTION_SECONDS  # we close idle ones first
        if config.get("tls"):
            if self.ctx.tls is None:
                raise ClientStartError("tls: true needs the server's tls section (cert, key, ca)")
            roles = config.get("roles")
            if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
                raise ClientStartError(
                    "tls: true needs roles: the certificate roles the server may present (e.g. [state])"
                )
            policy: Any = ClientTLSPolicy(self.ctx.tls, roles)
        else:
            policy = BrowserLikePolicyForHTTPS()
        outbound = self.ctx.outbound
        try:
            outbound.check_url(base_url, any_path=True)
        except OutboundRefused as e:
            log.warn(
                "service {service}: {reason}; its calls will be refused",
                service=self.service,
                reason=self.secrets.text(str(e)),
            )
        endpoints = GuardedEndpoints(IReactorTCP(self.ctx.reactor), outbound, policy, self.timeout)
        agent = Agent.usingEndpointFactory(self.ctx.reactor, endpoints, pool=self.pool)
        self.http = treq.client.HTTPClient(GuardedAgent(agent, outbound))
        self.name = config.get("process_name") or service_module(self.service)
        return self.state()

    def state(self) -> Any:
        return {
            "name": self.name,
            "base_url": self.base_url,
            "headers": self.headers,
            "pool_size": self.pool_size,
        }

    def stop(self, config: dict[str, Any]) -> Any:
        return self.pool.closeCachedConnections()

    def url(self, path: Any, params: Any) -> str:
        path = "/" if path is None else str(path)
        if not path.startswith("/"):
            path = "/" + path
        url = self.base_url.rstrip("/") + path
        if params:
            if not isinstance(params, dict):
                raise ValueError("params must be an object")
            url += ("&" if "?" in url else "?") + urlencode({str(k): _param(v) for k, v in params.items()})
        return url

    def call(self, prepared: Any, config: dict[str, Any]) -> Any:
        if not isinstance(prepared, dict):
            raise ValueError("the HTTP client expects an object with method, path, params, headers, body")
        method = str(prepared.get("method") or "GET").upper()
        headers = dict(self.headers)
        extra = prepared.get("headers") or {}
        if not isinstance(extra, dict):
            raise ValueError("headers must be an object")
        headers.update({str(k): str(v) for k, v in extra.items()})
        body = prepared.get("body")
        data: bytes | None = None
        if method not in _NO_BODY and body is not None:
            if isinstance(body, str):
                data = body.encode("utf-8")
            else:
                data = json.dumps(body, separators=(",", ":")).encode("utf-8")
                if not any(k.lower() == "content-type" for k in headers):
                    headers["Content-Type"] = "application/json"
        url = self.url(prepared.get("path"), prepared.get("params"))
        timeout = float(config.get("timeout") or self.timeout)
        parse = bool(config.get("parse_json_body"))
        raw_headers: dict[bytes | str, list[bytes | str]] = {k: [v] for k, v in headers.items()}

        def send() -> defer.Deferred[Any]:
            d = self.http.request(method, url, headers=raw_headers, data=data, timeout=timeout)
            return d.addCallbacks(self._read, self._failed, callbackArgs=(parse,))

        return self.slots.run(send)

    def _failed(self, failure: Any) -> ClientError:
        result = _transport_error(failure)
        if result.error == "outbound_refused":
            self.ctx.refusals.refuse("outbound", f"service {self.service}", self.secrets.text(result.message))
        return result

    @defer.inlineCallbacks
    def _read(self, response: Any, parse: bool) -> Any:
        """The answer as a result; a body over ``MAX_BODY`` is refused as it arrives (the
        connection is dropped), not after it was held in memory."""
        if isinstance(response.length, int) and response.length > MAX_BODY:
            response.deliverBody(_Discard())
            raise ValueError(f"response body over {MAX_BODY} bytes (Content-Length {response.length})")
        chunks: list[bytes] = []
        received = [0]

        def collect(data: bytes) -> None:
            received[0] += len(data)
            if received[0] > MAX_BODY:
                raise ValueError(f"response body over {MAX_BODY} bytes")
            chunks.append(data)

        yield treq.collect(response, collect)
        raw = b"".join(chunks)
        headers = {
            k.decode("latin-1").lower(): v[-1].decode("latin-1")
            for k, v in response.headers.getAllRawHeaders()
        }
        text: Any = raw.decode("utf-8", "replace")
        if parse:
            try:
                text = jsonlimits.loads(text, MAX_JSON_DEPTH) if text.strip() else None
            except JSONLimitError as e:
                raise ValueError(f"response body {e}") from None
            except ValueError as e:
                raise ValueError(f"response body is not JSON: {e}") from None
        return {"status": response.code, "headers": headers, "body": text}
