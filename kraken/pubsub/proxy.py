"""A proxy node's connection upstream: the Twisted adapter around :class:`UpstreamLink`.

:class:`UpstreamService` keeps one mutual-TLS connection to the first reachable node of the
``upstream`` list (the server's certificate must name the role ``pubsub``). When it is lost,
the next node of the list is tried at once, then the others in turn, waiting longer after
each round that found none (up to ``max_retry_delay``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.core.config import ConfigError
from kraken.core.endpoints import connect
from kraken.core.tls import IdentifiedProtocol, TLSSettings
from kraken.pubsub import wire
from kraken.pubsub.cluster import Cluster
from kraken.pubsub.upstream import UpstreamLink

log = Logger(namespace="kraken.pubsub.proxy")


def parse_upstream(entries: Sequence[str], key: str = "upstream") -> list[tuple[str, int]]:
    """``host:port`` entries of the ``upstream`` (or cluster) key."""
    nodes = []
    for entry in entries:
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"pubsub.{key}: {entry!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


class UpstreamProtocol(Protocol):
    transport: ITransport

    def __init__(self, service: UpstreamService, peer: str) -> None:
        self.service = service
        self.peer = peer

    def connectionMade(self) -> None:
        self.service.link.attach(self.transport.write, self.peer)

    def dataReceived(self, data: bytes) -> None:
        try:
            self.service.link.receive(data)
        except wire.WireError:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.service.lost(self)


class _UpstreamFactory(Factory[UpstreamProtocol]):
    noisy = False

    def __init__(self, service: UpstreamService, peer: str) -> None:
        self.service = service
        self.peer = peer

    def buildProtocol(self, addr: Any) -> UpstreamProtocol:
        return UpstreamProtocol(self.service, self.peer)


class UpstreamService(Service):
    def __init__(
        self,
        link: UpstreamLink,
        nodes: Sequence[tuple[str, int]],
        tls: TLSSettings | None,
        reactor: IReactorTime,
        retry_delay: float = 0.5,
        max_retry_delay: float = 5.0,
        timeout: float = 10.0,
    ) -> None:
        if not nodes:
            raise ConfigError("pubsub.upstream: no upstream node")
        if tls is None:
            raise ConfigError("pubsub upstream/cluster links need the tls section: they use mutual TLS")
        self.link = link
        self.nodes = list(nodes)
        self.tls = tls
        self.reactor = reactor
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.index = 0
        self._failures = 0  # consecutive failed attempts
        self._protocol: UpstreamProtocol | None = None
        self._retry: IDelayedCall | None = None
        # an upstream that leaves a question unanswered this long is dropped (then the next)
        self.timeout = timeout
        self._watch = LoopingCall(self.watch)
        self._watch.clock = reactor

    def startService(self) -> None:
        super().startService()
        self._attempt()
        self._watch.start(min(1.0, self.timeout / 3), now=False)

    def watch(self) -> None:
        link = self.link
        if link.silent_for() > self.timeout:
            log.warn(
                "upstream {peer} has not answered for {seconds:.0f} s: dropping it",
                peer=link.peer,
                seconds=link.silent_for(),
            )
            self.drop()
        else:
            link.keepalive()

    def stopService(self) -> None:
        super().stopService()
        if self._watch.running:
            self._watch.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._protocol is not None:
            self._protocol.transport.loseConnection()

    def drop(self) -> None:
        """Close the connection (a peer that stopped answering): the next attempt follows."""
        if self._protocol is not None:
            transport = self._protocol.transport
            if isinstance(transport, IdentifiedProtocol):
                transport.tls.abortConnection()
            else:
                transport.loseConnection()

    def _attempt(self) -> None:
        self._retry = None
        if not self.running:
            return
        host, port = self.nodes[self.index]
        peer = f"{host}:{port}"
        d = connect(self.reactor, host, port, _UpstreamFactory(self, peer), self.tls, {"pubsub"})
        d.addCallbacks(self._connected, self._failed, errbackArgs=(peer,))

    def _connected(self, protocol: UpstreamProtocol) -> None:
        self._failures = 0
        self._protocol = protocol
        if not self.running:
            protocol.transport.loseConnection()

    def _failed(self, failure: Failure, peer: str) -> None:
        log.warn("cannot reach upstream {peer}: {why}", peer=peer, why=failure.getErrorMessage())
        self._failures += 1
        self._next(self.retry_delay * min(2 ** (self._failures // len(self.nodes)), 1 << 10))

    def lost(self, protocol: UpstreamProtocol) -> None:
        self.link.detach()
        if protocol is self._protocol:
            self._protocol = None
            self._next(0)

    def _next(self, delay: float) -> None:
        self.index = (self.index + 1) % len(self.nodes)
        if self.running and self._retry is None:
            self._retry = self.reactor.callLater(min(delay, self.max_retry_delay), self._attempt)


class ClusterService(MultiService):
    """A cluster node's links: one :class:`UpstreamService` per peer, and the health checks."""

    def __init__(
        self, cluster: Cluster, tls: TLSSettings | None, reactor: IReactorTime, interval: float = 1.0
    ) -> None:
        super().__init__()
        self.cluster = cluster
        self.peers: dict[str, UpstreamService] = {}
        for member, link in cluster.links.items():
            service = UpstreamService(link, parse_upstream([member], "cluster_members"), tls, reactor)
            service.setServiceParent(self)
            self.peers[member] = service
        self.checks = LoopingCall(self.check)
        self.checks.clock = reactor
        self.interval = interval

    def startService(self) -> None:
        super().startService()
        self.checks.start(self.interval, now=False)

    def stopService(self) -> Deferred[None] | None:
        if self.checks.running:
            self.checks.stop()
        return super().stopService()

    def check(self) -> None:
        """Ping every peer; drop the connection of one silent for too long."""
        for member, service in self.peers.items():
            link = self.cluster.links[member]
            if link.connected and not self.cluster.healthy(member):
                log.warn("cluster peer {peer} stopped answering: reconnecting", peer=member)
                service.drop()
        self.cluster.ping()
