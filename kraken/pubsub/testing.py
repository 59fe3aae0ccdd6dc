"""An in-memory pub/sub server for tests: real protocol objects on ``StringTransport``s and a
``Clock``, so byte transcripts can be checked without sockets or sleeping."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from kraken.pubsub.router import Router
from kraken.pubsub.server import Limits, MemcachedFactory, MemcachedProtocol


class Conn:
    """One client connection; :meth:`send` returns what the server wrote back."""

    def __init__(self, harness: Harness, port: int) -> None:
        self.harness = harness
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port))
        protocol = harness.factory.buildProtocol(self.transport.getPeer())
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
        if not self.lost:
            if chunk is None:
                self.protocol.dataReceived(data)
            else:
                for i in range(0, len(data), chunk):
                    self.protocol.dataReceived(data[i : i + chunk])
                    if self.transport.disconnecting:
                        break
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
