"""An HTTP(S) client for kraken components talking to each other (treq, mutual TLS, pooled)."""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from twisted.web.client import Agent, HTTPConnectionPool

from kraken.core.tls import ClientTLSPolicy, TLSSettings


class HTTPStatusError(Exception):
    """A response with a status the caller did not expect; carries status and body."""

    def __init__(self, method: str, url: str, status: int, body: bytes) -> None:
        text = body[:300].decode("utf-8", "replace")
        super().__init__(f"{method} {url} -> {status}: {text}")
        self.status = status
        self.body = body


def make_http_client(reactor: Any, tls: TLSSettings | None, persistent: bool = True) -> HTTPClient:
    """A treq client presenting our certificate (when *tls*) and pooling connections."""
    pool = HTTPConnectionPool(reactor, persistent=persistent)
    pool.maxPersistentPerHost = 8
    pool.retryAutomatically = False
    policy = ClientTLSPolicy(tls) if tls is not None else None
    agent = Agent(reactor, policy, pool=pool) if policy is not None else Agent(reactor, pool=pool)
    client = HTTPClient(agent)
    client._kraken_pool = pool  # closed by close_http_client
    return client


def close_http_client(client: HTTPClient) -> Any:
    return client._kraken_pool.closeCachedConnections()


def base_url(address: str, tls: TLSSettings | None) -> str:
    """``host:port`` or a URL → URL with the scheme our TLS settings imply."""
    if "://" in address:
        return address.rstrip("/")
    return f"{'https' if tls is not None else 'http'}://{address}"
