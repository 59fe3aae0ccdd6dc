"""The agent's tracker client gives up on a tracker that accepts connections but never answers."""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.web._newclient import ResponseNeverReceived

from kraken.agent.tracker_client import TrackerClient
from kraken.core.digest import Digest
from kraken.core.httpclient import close_http_client, make_http_client


class Silent(Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_requests_to_a_silent_tracker_time_out() -> None:
    port = reactor.listenTCP(0, Factory.forProtocol(Silent), interface="127.0.0.1")
    http = make_http_client(reactor, None, {"tracker"})
    try:
        client = TrackerClient(reactor, f"127.0.0.1:{port.getHost().port}", None, http, request_timeout=0.3,
                               unavailable_timeout=0)
        started = time.monotonic()
        with pytest.raises(ResponseNeverReceived):
            await client.metainfo("ns", Digest.of_bytes(b"x"))
        assert time.monotonic() - started < 5, "gave up after request_timeout, not never"
    finally:
        await close_http_client(http)
        await port.stopListening()
