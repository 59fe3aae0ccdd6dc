"""Endpoint strings as kraken configs spell them.

A listen entry is any Twisted server endpoint string (``tcp:12355:interface=127.0.0.1``,
``unix:/run/kraken.sock``); prefixed with ``tls:`` the listener speaks mutual TLS with the
settings of the ``tls`` section and admits only the roles the server names for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, serverFromString, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IProtocolFactory, IReactorTime, IStreamServerEndpoint

from kraken.core.reactor import IServerReactor
from kraken.core.tls import (
    IdentifiedFactory,
    IdentifiedProtocol,
    TLSConfigError,
    TLSSettings,
    client_creator,
    wrap_server_factory,
)

TLS_PREFIX = "tls:"


def is_tls(description: str) -> bool:
    return description.startswith(TLS_PREFIX)


def server_endpoint(
    reactor: IServerReactor,
    description: str,
    factory: IProtocolFactory,
    tls: TLSSettings | None,
    allowed_roles: Iterable[str] | None = None,
    aborted: Counter | None = None,
) -> tuple[IStreamServerEndpoint, IProtocolFactory]:
    """The endpoint for *description* and the factory to listen with (TLS-wrapped if asked).

    A TLS listener aborts connections that do not finish their handshake in time or exceed
    the caps of the ``tls`` section (counted in *aborted*, by reason).
    """
    if is_tls(description):
        if tls is None:
            raise TLSConfigError(f"listen {description!r} asks for TLS but the tls section is empty")
        endpoint = serverFromString(reactor, description[len(TLS_PREFIX) :])
        return endpoint, wrap_server_factory(factory, tls, allowed_roles, reactor, aborted)
    return serverFromString(reactor, description), factory


def connect(
    reactor: IReactorTime,
    host: str,
    port: int,
    factory: IProtocolFactory,
    tls: TLSSettings | None = None,
    expected_roles: Iterable[str] | None = None,
    timeout: float = 10,
) -> Deferred[Any]:
    """Connect *factory* to *host*:*port*; fires with the connected protocol *factory* built.

    With *tls*, the server's certificate and name are verified and its role must be one of
    *expected_roles* (required with *tls*); the result fires only after the handshake, when
    the protocol's ``connectionMade`` has run with ``transport.peer`` set, and fails if the
    handshake does (:class:`~kraken.core.tls.RoleRefused` for a server of another role) or
    takes longer than *timeout* once connected (a silent server).
    """
    tcp = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if tls is None:
        return tcp.connect(factory)
    if not expected_roles:
        raise ValueError(f"connecting to {host}:{port} over TLS needs the server roles expected")
    ready: Deferred[Any] = Deferred()
    wrapped = IdentifiedFactory(factory, ready)
    connecting = wrapClientTLS(client_creator(tls, host, expected_roles), tcp).connect(wrapped)
    connecting.addCallbacks(
        lambda protocol: _handshake_deadline(reactor, protocol, ready, timeout),
        lambda f: ready.errback(f) if not ready.called else None,
    )
    return ready


def _handshake_deadline(
    reactor: IReactorTime, protocol: IdentifiedProtocol, ready: Deferred[Any], timeout: float
) -> None:
    """Abort *protocol*'s connection if its handshake is not done within *timeout*."""
    if ready.called:
        return
    call = reactor.callLater(timeout, protocol.tls.abortConnection)
    ready.addBoth(_cancelled, call)


def _cancelled(result: Any, call: IDelayedCall) -> Any:
    if call.active():
        call.cancel()
    return result
