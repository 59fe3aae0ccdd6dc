"""An HTTP(S) client for kraken components talking to each other (treq, mutual TLS, pooled).

Each client names the roles the servers it talks to must present (``{"origin"}`` for a
client of origins...); a server with another role fails the TLS handshake.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import Agent, HTTPConnectionPool

from kraken.core import jsonlimits
from kraken.core.tls import ClientTLSPolicy, TLSSettings


class HTTPStatusError(Exception):
    """A response with a status the caller did not expect; carries status and body."""

    def __init__(self, method: str, url: str, status: int, body: bytes) -> None:
        text = body[:300].decode("utf-8", "replace")
        super().__init__(f"{method} {url} -> {status}: {text}")
        self.status = status
        self.body = body


def causes(error: BaseException) -> list[BaseException]:
    """What Twisted's wrapped client errors (``ResponseFailed``, ``ResponseNeverReceived``) wrap;
    any other error is its own cause."""
    reasons = getattr(error, "reasons", None)
    if not isinstance(reasons, list) or not reasons:
        return [error]
    values = [getattr(reason, "value", reason) for reason in reasons]
    return [value for value in values if isinstance(value, BaseException)] or [error]


def error_text(error: BaseException) -> str:
    """What went wrong, for people: the causes' messages, not a list of ``Failure`` reprs."""
    return "; ".join(str(cause) or type(cause).__name__ for cause in causes(error))


class BadJSONResponse(ValueError):
    """A response body that is not JSON, or over the limits of :mod:`kraken.core.jsonlimits`."""


MAX_JSON_BODY = 16 * 1024 * 1024


@inlineCallbacks
def read_body(response: Any, what: str, limit: int = MAX_JSON_BODY) -> Any:
    """*response*'s body, or :class:`BadJSONResponse` naming *what* answered once it passes
    *limit* bytes (the connection is dropped then; treq's ``content()`` has no limit)."""
    chunks: list[bytes] = []
    received = 0

    def collect(data: bytes) -> None:
        nonlocal received
        received += len(data)
        if received > limit:
            raise BadJSONResponse(f"{what} sent a body over {limit} bytes")
        chunks.append(data)

    yield treq.collect(response, collect)
    return b"".join(chunks)


@inlineCallbacks
def json_body(response: Any, what: str, limit: int = MAX_JSON_BODY) -> Any:
    """*response*'s body (at most *limit* bytes) read strictly by
    :func:`kraken.core.jsonlimits.loads`; :class:`BadJSONResponse` naming *what* answered if it
    cannot be used."""
    raw = yield read_body(response, what, limit)
    try:
        return jsonlimits.loads(raw, strict=True)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadJSONResponse(f"{what} sent a body that is not usable JSON: {str(e)[:200]}") from None


IDLE_CONNECTION_SECONDS = 15
"""How long an idle pooled connection is kept: below every kraken server's ``http.header_timeout``
default, so that the client, not the server, closes it and no request races the server's close."""


class PooledHTTPClient(HTTPClient):
    """A treq client presenting our certificate (when *tls*) over its own connection pool; the
    servers it reaches over TLS must present one of *expected_roles*."""

    def __init__(
        self,
        reactor: IReactorTime,
        tls: TLSSettings | None,
        expected_roles: Iterable[str],
        persistent: bool = True,
    ) -> None:
        self.pool = HTTPConnectionPool(reactor, persistent=persistent)
        self.pool.maxPersistentPerHost = 8
        self.pool.cachedConnectionTimeout = IDLE_CONNECTION_SECONDS
        self.pool.retryAutomatically = False
        if tls is not None:
            agent = Agent(reactor, ClientTLSPolicy(tls, expected_roles), pool=self.pool)
        else:
            agent = Agent(reactor, pool=self.pool)
        super().__init__(agent)

    def close(self) -> Deferred[None]:
        """Close the pooled connections (a server does so when it stops)."""
        return self.pool.closeCachedConnections()


def make_http_client(
    reactor: IReactorTime, tls: TLSSettings | None, expected_roles: Iterable[str], persistent: bool = True
) -> PooledHTTPClient:
    """A treq client presenting our certificate (when *tls*), pooling connections, and talking
    only to servers whose certificate names one of *expected_roles*."""
    return PooledHTTPClient(reactor, tls, expected_roles, persistent)


def close_http_client(client: PooledHTTPClient) -> Deferred[None]:
    return client.close()


def base_url(address: str, tls: TLSSettings | None) -> str:
    """``host:port`` or a URL → URL with the scheme our TLS settings imply."""
    if "://" in address:
        return address.rstrip("/")
    return f"{'https' if tls is not None else 'http'}://{address}"
