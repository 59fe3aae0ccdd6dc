"""Where the HTTP client may connect: ``pipeline.outbound_allow``, checked twice.

Entries (nothing is allowed unless an entry allows it):

- a URL prefix, ``https://api.example.com/v1/``: that scheme, host and port, paths under it;
- ``host:port`` or ``host`` (any port), ``[v6-address]:port``: any path on that host;
- a network, ``10.0.0.0/8`` or ``10.1.2.3/32``: any IP-literal URL and any resolved
  address in it, any port.

Every request (redirects included, they are requests of their own) must match an entry by
its URL; then the host name is resolved here and the connection goes to the checked address,
never resolved again. A name entry admits the name's public addresses; an address that is
loopback, private, link-local or otherwise not global must be allowed by a network entry or
an IP-literal entry (``localhost`` entries admit loopback), so a name cannot be re-pointed
(DNS rebinding) at an internal service.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import (
    IHostResolution,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.web.client import URI
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_PORTS = {"http": 80, "https": 443}


class OutboundRefused(Exception):
    """A destination ``pipeline.outbound_allow`` does not allow."""


@dataclass(frozen=True)
class Rule:
    text: str
    host: str | None = None  # lower-case name or address text
    port: int | None = None  # None: any port
    scheme: str | None = None
    path: str | None = None  # URL prefix entries: the path prefix
    network: IPNetwork | None = None

    def matches_url(self, scheme: str, host: str, port: int, path: str | None) -> bool:
        """Whether this entry allows the URL (any path when *path* is None)."""
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            address = _address(host)
            return address is not None and address in self.network
        if self.host != host or (self.scheme is not None and self.scheme != scheme):
            return False
        if self.path is None or self.path == "/" or path is None:
            return True
        prefix = self.path.rstrip("/")
        return path == prefix or path.startswith(prefix + "/")

    def admits(self, host: str, port: int, address: IPAddress) -> bool:
        """Whether a connection to *address* for *host* is allowed by this entry."""
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return address in self.network
        if self.host == host and _address(host) == address:
            return True
        if self.host != host:
            return False
        if address.is_global:
            return True
        return host == "localhost" and address.is_loopback


def _address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def parse_rule(text: str) -> Rule:
    """One ``outbound_allow`` entry; ``ValueError`` names what is wrong with it."""
    entry = text.strip()
    if entry.startswith(("http://", "https://")):
        parts = urlsplit(entry)
        if not parts.hostname:
            raise ValueError(f"outbound_allow entry {text!r}: no host")
        url_port = parts.port or DEFAULT_PORTS[parts.scheme]
        return Rule(text, _normal_host(parts.hostname), url_port, parts.scheme, parts.path or "/")
    if "/" in entry:
        try:
            return Rule(text, network=ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"outbound_allow entry {text!r} is not a network (10.0.0.0/8)") from None
    host = entry
    port: int | None = None
    if entry.startswith("["):
        close = entry.find("]")
        host, rest = entry[1:close], entry[close + 1 :]
        if rest:
            port = _port(text, rest.lstrip(":"))
    elif entry.count(":") == 1:
        host, port_text = entry.split(":")
        port = _port(text, port_text)
    if not host:
        raise ValueError(f"outbound_allow entry {text!r}: no host")
    address = _address(host)
    return Rule(text, str(address) if address is not None else host.lower(), port)


def _port(text: str, port: str) -> int:
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"outbound_allow entry {text!r}: bad port {port!r}")
    return int(port)


class OutboundPolicy:
    """The parsed allow-list; empty allows nothing."""

    def __init__(self, entries: Sequence[str] = ()) -> None:
        self.rules = [parse_rule(e) for e in entries]

    def check_url(self, url: str, any_path: bool = False) -> None:
        """Refuse *url* unless an entry allows it (with *any_path*: its scheme, host and port)."""
        parts = urlsplit(url)
        scheme = parts.scheme
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            raise OutboundRefused(f"{url} is not an http(s) URL")
        host = _normal_host(parts.hostname)
        port = parts.port or DEFAULT_PORTS[scheme]
        path = None if any_path else parts.path or "/"
        if not any(r.matches_url(scheme, host, port, path) for r in self.rules):
            raise OutboundRefused(f"{scheme}://{parts.netloc}{parts.path} is not in pipeline.outbound_allow")

    def check_address(self, host: str, port: int, address: IPAddress) -> None:
        host = _normal_host(host)
        if not any(r.admits(host, port, address) for r in self.rules):
            raise OutboundRefused(
                f"{host}:{port} resolves to {address}, which pipeline.outbound_allow does not allow"
            )


def _normal_host(host: str) -> str:
    address = _address(host)
    return str(address) if address is not None else host.lower().rstrip(".")


@implementer(IAgent)
class GuardedAgent:
    """An agent that refuses URLs outside the allow-list before asking *agent*; treq's
    redirect handling wraps it, so every hop is checked."""

    def __init__(self, agent: IAgent, policy: OutboundPolicy) -> None:
        self.agent = agent
        self.policy = policy

    def request(self, method: bytes, uri: bytes, headers: Any = None, body: Any = None) -> Any:
        try:
            self.policy.check_url(uri.decode("ascii", "replace"))
        except OutboundRefused as e:
            return defer.fail(e)
        return self.agent.request(method, uri, headers, body)


@implementer(IAgentEndpointFactory)
class GuardedEndpoints:
    """Endpoints that resolve the host, check the address, then connect to that address."""

    def __init__(
        self, reactor: IReactorTCP, policy: OutboundPolicy, tls: IPolicyForHTTPS, timeout: float
    ) -> None:
        self.reactor = reactor
        self.policy = policy
        self.tls = tls
        self.timeout = timeout

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        return _GuardedEndpoint(self, uri.scheme, uri.host, uri.port)


@implementer(IResolutionReceiver)
class _Addresses:
    """Collects the addresses a host name resolves to."""

    def __init__(self) -> None:
        self.found: list[IPAddress] = []
        self.done: defer.Deferred[list[IPAddress]] = defer.Deferred()

    def resolutionBegan(self, resolution: IHostResolution) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        parsed = _address(address.host)
        if parsed is not None:
            self.found.append(parsed)

    def resolutionComplete(self) -> None:
        self.done.callback(self.found)


@implementer(IStreamClientEndpoint)
class _GuardedEndpoint:
    def __init__(self, factory: GuardedEndpoints, scheme: bytes, host: bytes, port: int) -> None:
        self.factory = factory
        self.scheme = scheme
        self.host = host.decode("idna") if isinstance(host, bytes) else host
        self.port = port

    def connect(self, protocol_factory: Any) -> defer.Deferred[Any]:
        d = self._resolve()
        d.addCallback(self._connect_checked, protocol_factory)
        return d

    def _resolve(self) -> defer.Deferred[list[IPAddress]]:
        literal = _address(self.host)
        if literal is not None:
            return defer.succeed([literal])
        receiver = _Addresses()
        resolver = IReactorPluggableNameResolver(self.factory.reactor).nameResolver
        resolver.resolveHostName(receiver, self.host, self.port)
        return receiver.done

    def _connect_checked(self, addresses: list[IPAddress], protocol_factory: Any) -> Any:
        if not addresses:
            raise DNSLookupError(self.host)
        refused: OutboundRefused | None = None
        for address in addresses:
            try:
                self.factory.policy.check_address(self.host, self.port, address)
            except OutboundRefused as e:
                refused = refused or e
                continue
            return self._endpoint(address).connect(protocol_factory)
        assert refused is not None
        raise refused

    def _endpoint(self, address: IPAddress) -> IStreamClientEndpoint:
        reactor, timeout = self.factory.reactor, self.factory.timeout
        endpoint: IStreamClientEndpoint
        if isinstance(address, ipaddress.IPv6Address):
            endpoint = TCP6ClientEndpoint(reactor, str(address), self.port, timeout=timeout)
        else:
            endpoint = TCP4ClientEndpoint(reactor, str(address), self.port, timeout=timeout)
        if self.scheme == b"https":
            creator = self.factory.tls.creatorForNetloc(self.host.encode("idna"), self.port)
            endpoint = wrapClientTLS(creator, endpoint)
        return endpoint
