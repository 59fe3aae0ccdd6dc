"""``reuseport:`` listen entries (kraken.core.endpoints): parsing and two listeners on one port."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

from kraken.core.endpoints import ReusePortEndpoint, server_endpoint
from tests.support import free_port


def test_parse_and_refuse() -> None:
    endpoint = ReusePortEndpoint.parse(reactor, "reuseport:tcp:1234:interface=127.0.0.1:backlog=7")  # type: ignore[arg-type]
    assert (endpoint.port, endpoint.interface, endpoint.backlog) == (1234, "127.0.0.1", 7)
    for bad in ("reuseport:udp:1", "reuseport:tcp:x", "reuseport:tcp:1:colour=red"):
        with pytest.raises(ValueError):
            ReusePortEndpoint.parse(reactor, bad)  # type: ignore[arg-type]


@pytest_twisted.inlineCallbacks
def test_two_listeners_share_a_port() -> Any:
    port = free_port()
    description = f"reuseport:tcp:{port}:interface=127.0.0.1"
    factory = Factory.forProtocol(Protocol)
    first, _ = server_endpoint(reactor, description, factory, None)  # type: ignore[arg-type]
    second, _ = server_endpoint(reactor, description, factory, None)  # type: ignore[arg-type]
    ports = [(yield first.listen(factory)), (yield second.listen(factory))]
    try:
        assert {p.getHost().port for p in ports} == {port}
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        for p in ports:
            yield p.stopListening()
