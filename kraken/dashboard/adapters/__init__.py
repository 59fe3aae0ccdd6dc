"""Data adapters: each turns one family of server endpoints into the JSON one dashboard page draws.

An adapter is small on purpose: when a server grows an endpoint, its adapter is the one place
that learns to read it. Every adapter reads each of its servers on its own, so one server being
down or lacking an endpoint marks only that server's part ("not available on this server").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred

from kraken.dashboard.sources import FetchError, Server, Unavailable

NOT_AVAILABLE = "not available on this server"


def outcome(server: Server, read: Callable[[Server], Any]) -> Deferred[dict[str, Any]]:
    """``{"server", "url", ...what read returned}``, or the same with ``unavailable`` or ``error``."""
    base = {"server": server.name, "kind": server.kind, "url": server.url}

    def ok(result: dict[str, Any]) -> dict[str, Any]:
        return {**base, **result}

    def failed(failure: Any) -> dict[str, Any]:
        if failure.check(Unavailable):
            return {**base, "unavailable": NOT_AVAILABLE}
        if failure.check(FetchError):
            return {**base, "error": str(failure.value)}
        return {**base, "error": f"unexpected answer: {failure.getErrorMessage()[:200]}"}

    return maybeDeferred(read, server).addCallbacks(ok, failed)


def each(servers: list[Server], read: Callable[[Server], Any]) -> Deferred[list[dict[str, Any]]]:
    """:func:`outcome` of every server, in the configured order."""
    return gatherResults([outcome(s, read) for s in servers])


def optional(d: Deferred[Any], default: Any = None) -> Deferred[Any]:
    """*d*, or *default* when the endpoint is not on this server."""

    def missing(failure: Any) -> Any:
        failure.trap(Unavailable)
        return default

    return d.addErrback(missing)
