"""A memcached connection's socket has TCP_NODELAY: a large ``get messages`` reply goes out
whole, without its last partial segment waiting for the client's (delayed) ACK."""

from __future__ import annotations

import socket
from typing import Any

import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.interfaces import IAddress

from kraken.pubsub.router import Router
from kraken.pubsub.server import MemcachedFactory, MemcachedProtocol


class RecordingFactory(MemcachedFactory):
    def __init__(self) -> None:
        super().__init__(Router(reactor), reactor)  # type: ignore[arg-type]
        self.built: list[MemcachedProtocol] = []

    def buildProtocol(self, addr: IAddress) -> MemcachedProtocol | None:
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            self.built.append(protocol)
        return protocol


@pytest_twisted.inlineCallbacks
def test_memcached_connections_set_tcp_nodelay() -> Any:
    factory = RecordingFactory()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    client = socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
    try:
        for _ in range(100):
            if factory.built:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        (protocol,) = factory.built
        handle = protocol.transport.getHandle()
        assert handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        client.sendall(b"set subscribe 0 0 1\r\nt\r\n")  # and it still serves
        client.setblocking(False)
        reply = b""
        for _ in range(100):
            yield task.deferLater(reactor, 0.01, lambda: None)
            try:
                reply += client.recv(100)
            except BlockingIOError:
                continue
            if len(reply) >= 8:
                break
        assert reply == b"STORED\r\n"
    finally:
        client.close()
        yield port.stopListening()
