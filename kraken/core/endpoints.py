"""Endpoint strings as kraken configs spell them.

A listen entry is any Twisted server endpoint string (``tcp:12355:interface=127.0.0.1``,
``unix:/run/kraken.sock``); prefixed with ``tls:`` the listener speaks mutual TLS with the
settings of the ``tls`` section and admits only the roles the server names for it.
``reuseport:tcp:12355:interface=127.0.0.1`` binds with ``SO_REUSEPORT``, so that several
processes on one host share the port and the kernel spreads connections over them.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, serverFromString, wrapClientTLS
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IProtocolFactory,
    IReactorSocket,
    IReactorTime,
    IStreamServerEndpoint,
)
from zope.interface import implementer

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
REUSEPORT_PREFIX = "reuseport:"


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """A TCP listener bound with ``SO_REUSEPORT`` (``reuseport:tcp:PORT[:interface=…][:backlog=…]``)."""

    def __init__(self, reactor: IReactorSocket, port: int, interface: str = "", backlog: int = 50) -> None:
        self.reactor = reactor
        self.port = port
        self.interface = interface
        self.backlog = backlog

    @classmethod
    def parse(cls, reactor: IReactorSocket, description: str) -> ReusePortEndpoint:
        kind, _, rest = description[len(REUSEPORT_PREFIX) :].partition(":")
        fields = rest.split(":")
        if kind != "tcp" or not fields[0].isdigit():
            raise ValueError(f"{description!r}: expected reuseport:tcp:PORT[:interface=ADDRESS][:backlog=N]")
        options = dict(f.partition("=")[::2] for f in fields[1:])
        unknown = set(options) - {"interface", "backlog"}
        if unknown:
            raise ValueError(f"{description!r}: unknown option {sorted(unknown)[0]!r}")
        return cls(reactor, int(fields[0]), options.get("interface", ""), int(options.get("backlog", 50)))

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        family = socket.AF_INET6 if ":" in self.interface else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((self.interface, self.port))
            sock.listen(self.backlog)
            sock.setblocking(False)
            # typeshed wants a ServerFactory; any IProtocolFactory serves, as for listenTCP
            port = self.reactor.adoptStreamPort(sock.fileno(), family, factory)  # type: ignore[arg-type]
        finally:
            sock.close()  # the reactor holds its own copy of the descriptor
        return succeed(port)


def _server_from_string(reactor: IServerReactor, description: str) -> IStreamServerEndpoint:
    if description.startswith(REUSEPORT_PREFIX):
        return ReusePortEndpoint.parse(IReactorSocket(reactor), description)
    return serverFromString(reactor, description)


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
        endpoint = _server_from_string(reactor, description[len(TLS_PREFIX) :])
        return endpoint, wrap_server_factory(factory, tls, allowed_roles, reactor, aborted)
    return _server_from_string(reactor, description), factory


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
