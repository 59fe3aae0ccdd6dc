"""An in-memory pub/sub server for tests: real protocol objects on ``StringTransport``s and a
``Clock``, so byte transcripts can be checked without sockets or sleeping.

:class:`Tree` is the same for a chain of proxy nodes (:mod:`kraken.pubsub.upstream`): its
clients are spread over the nodes, and every command is followed by moving bytes between the
nodes until nothing moves, so a test sees what it would see once the links have caught up."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from kraken.pubsub import wire
from kraken.pubsub.cluster import Cluster
from kraken.pubsub.router import Router
from kraken.pubsub.server import Limits, MemcachedFactory, MemcachedProtocol
from kraken.pubsub.upstream import UpstreamLink


class Conn:
    """One client connection; :meth:`send` returns what the server wrote back."""

    def __init__(self, harness: Harness, port: int, factory: MemcachedFactory | None = None) -> None:
        self.harness = harness
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port))
        factory = factory or harness.factory
        protocol = factory.buildProtocol(self.transport.getPeer())
        assert protocol is not None
        self.protocol: MemcachedProtocol = protocol
        self.protocol.makeConnection(self.transport)
        self.lost = False

    def read(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        self._settle()
        return data

    def send(self, data: bytes, chunk: int | None = None) -> bytes:
        self.harness.pump()
        if not self.lost:
            if chunk is None:
                self.protocol.dataReceived(data)
            else:
                for i in range(0, len(data), chunk):
                    self.protocol.dataReceived(data[i : i + chunk])
                    if self.transport.disconnecting:
                        break
        self.harness.pump()
        return self.read()

    def _settle(self) -> None:
        if self.transport.disconnecting and not self.lost:
            self.close()

    @property
    def closed(self) -> bool:
        self._settle()
        return self.lost

    def close(self) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connectionLost(connectionDone)


class Harness:
    def __init__(
        self, shards: int = 4, retained: int = 10000, start: float = 1_700_000_000.0, **limits: Any
    ) -> None:
        self.clock = Clock()
        self.clock.advance(start)
        self.router = Router(self.clock, shards=shards, retained_per_shard=retained)
        self.factory = MemcachedFactory(self.router, self.clock, Limits(**limits))
        self._port = 40000

    def connect(self) -> Conn:
        self._port += 1
        return Conn(self, self._port)

    def pump(self) -> None:
        """Move bytes between nodes until nothing moves (one node: nothing to do)."""


class _Link:
    """A proxy node's upstream link wired to a connection of its parent node in memory."""

    def __init__(self, link: UpstreamLink, upstream: Conn) -> None:
        self.link = link
        self.upstream = upstream
        self.outbox: list[bytes] = []
        session = upstream.protocol.session
        assert session is not None
        session.may_link = True  # as over mutual TLS with a pubsub certificate
        link.attach(self.outbox.append, "parent")

    def exchange(self) -> bool:
        """Pass what the link wrote upstream and the answers back; whether anything but an
        empty poll moved."""
        self.link.poll()
        data = b"".join(self.outbox)
        self.outbox.clear()
        before = self.link.records_in
        transport = self.upstream.transport
        if data:
            self.upstream.protocol.dataReceived(data)
        reply = transport.value()
        transport.clear()
        if reply:
            self.link.receive(reply)
        if not data and not reply:
            return False
        return data != wire.get_command() or reply != wire.END or self.link.records_in != before


class Tree(Harness):
    """``levels`` nodes in a chain, each a proxy of the one before; ``router`` and ``factory``
    are the root's. Clients connect to the deepest node first, then the root, then the nodes
    in between, in turn. :meth:`add_proxy` and :meth:`fail_over` build other shapes."""

    def __init__(self, levels: int = 2, shards: int = 4, retained: int = 10000, **kwargs: Any) -> None:
        super().__init__(shards, retained, **kwargs)
        self._shards, self._retained = shards, retained
        self._limits = {k: v for k, v in kwargs.items() if k != "start"}
        self.routers = [self.router]
        self.factories = [self.factory]
        self.links: dict[int, _Link] = {}
        for level in range(1, levels):
            self.add_proxy(level - 1)
        order = [levels - 1, 0, *range(1, levels - 1)]
        self._order = [self.factories[i] for i in order]
        self._next = 0

    def add_proxy(self, parent: int) -> int:
        """A new proxy node of node *parent*; its index."""
        router = Router(self.clock, shards=self._shards, retained_per_shard=self._retained)
        link = UpstreamLink(router, self.clock)
        router.upstream = link
        self.routers.append(router)
        self.factories.append(MemcachedFactory(router, self.clock, Limits(**self._limits)))
        index = len(self.routers) - 1
        self._port += 1
        self.links[index] = _Link(link, Conn(self, self._port, self.factories[parent]))
        return index

    def link(self, node: int) -> UpstreamLink:
        return self.links[node].link

    def fail_over(self, node: int, parent: int) -> None:
        """Node *node*'s upstream connection breaks; it connects to node *parent* instead."""
        old = self.links[node]
        old.upstream.close()
        old.link.detach()
        self._port += 1
        self.links[node] = _Link(old.link, Conn(self, self._port, self.factories[parent]))

    def connect_to(self, node: int) -> Conn:
        self._port += 1
        return Conn(self, self._port, self.factories[node])

    def connect(self) -> Conn:
        self._port += 1
        factory = self._order[self._next % len(self._order)]
        self._next += 1
        return Conn(self, self._port, factory)

    def pump(self) -> None:
        for _ in range(1000):
            self.clock.advance(0)
            moved = False
            for link in list(self.links.values()):
                moved = link.exchange() or moved
            if not moved:
                return
        raise AssertionError("the links never settled")


class Mesh(Harness):
    """``size`` nodes of one cluster (:mod:`kraken.pubsub.cluster`), each linked to every
    other; ``router`` and ``factory`` are node 0's. Clients connect to the nodes in turn."""

    def __init__(self, size: int = 3, shards: int = 4, retained: int = 10000, **kwargs: Any) -> None:
        super().__init__(shards, retained, **kwargs)
        limits = {k: v for k, v in kwargs.items() if k != "start"}
        self.routers = [self.router]
        self.factories = [self.factory]
        for _ in range(1, size):
            router = Router(self.clock, shards=shards, retained_per_shard=retained)
            self.routers.append(router)
            self.factories.append(MemcachedFactory(router, self.clock, Limits(**limits)))
        names = [f"node{i}" for i in range(size)]
        self.clusters: list[Cluster] = []
        self.links: list[_Link] = []
        for i, router in enumerate(self.routers):
            cluster = Cluster(router, self.clock, names[i], names)
            router.upstream = cluster
            self.clusters.append(cluster)
            for j, name in enumerate(names):
                if j != i:
                    self._port += 1
                    self.links.append(_Link(cluster.links[name], Conn(self, self._port, self.factories[j])))
        self._next = 0

    def connect(self) -> Conn:
        return self.connect_to(self._next_node())

    def _next_node(self) -> int:
        self._next += 1
        return (self._next - 1) % len(self.routers)

    def connect_to(self, node: int) -> Conn:
        self._port += 1
        return Conn(self, self._port, self.factories[node])

    def kill(self, node: int) -> None:
        """Node *node* stops: every link to or from it breaks."""
        name = self.clusters[node].me
        for link in list(self.links):
            inbound = link.upstream.protocol.factory is self.factories[node]
            if inbound or link.link in self.clusters[node].links.values():
                link.upstream.close()
                link.link.detach()
                self.links.remove(link)
        assert all(not c.healthy(name) for i, c in enumerate(self.clusters) if i != node)

    def pump(self) -> None:
        for cluster in self.clusters:
            cluster.ping()
        for _ in range(1000):
            self.clock.advance(0)
            moved = False
            for link in self.links:
                moved = link.exchange() or moved
            if not moved:
                return
        raise AssertionError("the links never settled")
