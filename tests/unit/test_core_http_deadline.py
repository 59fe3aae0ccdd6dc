"""KrakenHTTPChannel's header deadline on a Clock: trickled bytes do not extend it, a request in
progress is not cut, a keep-alive connection idles at most the deadline once a response is
out, and a response the client stops taking is aborted after the send timeout."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET

from kraken.core.config import HTTPSection
from kraken.core.http import Router, make_site
from kraken.core.metrics import Metrics


def serve(held: list[Deferred[Any]]) -> tuple[Clock, Any, StringTransport, Metrics]:
    router = Router()
    router.route("GET", "/now", lambda request: {"ok": True})

    def hold(request: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        held.append(d)
        return d

    router.route("GET", "/slow", hold)

    def stream(request: Any) -> Any:
        request.setHeader(b"content-length", b"100")
        request.write(b"x" * 10)
        return NOT_DONE_YET

    router.route("GET", "/stream", stream)
    clock, metrics = Clock(), Metrics("t")
    limits = HTTPSection(header_timeout=5, idle_timeout=60, send_timeout=10)
    site = make_site(router, metrics, http=limits, reactor=clock)
    channel = site.buildProtocol(IPv4Address("TCP", "10.0.0.9", 1234))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.9", 1234))
    channel.makeConnection(transport)
    return clock, channel, transport, metrics


def aborted(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "kraken_t_connections_aborted_total", {"reason": "http_headers_timeout"}
    )
    return value or 0.0


def test_trickled_headers_are_cut_at_the_deadline() -> None:
    clock, channel, transport, metrics = serve([])
    channel.dataReceived(b"GET /now HTTP/1.1\r\nX-Slow: ")
    while not transport.disconnecting and clock.seconds() < 60:
        channel.dataReceived(b"x")  # a byte every 0.1 s: twisted.web's idle timeout never fires
        clock.advance(0.1)
    assert transport.disconnecting
    assert clock.seconds() < 5.2  # cut at the deadline, not 60 s (twisted.web: never)
    assert aborted(metrics) == 1


def test_a_request_in_progress_is_not_cut_and_keep_alive_idles_at_most_the_deadline() -> None:
    held: list[Deferred[Any]] = []
    clock, channel, transport, metrics = serve(held)
    channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(30)
    assert not transport.disconnecting and held
    held[0].callback({"done": True})
    assert b"200 OK" in transport.value()
    clock.advance(4)
    channel.dataReceived(b"GET /now HTTP/1.1\r\nHost: x\r\n\r\n")  # the deadline restarts per request
    clock.advance(4)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting
    assert aborted(metrics) == 1


def stalled(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value(
        "kraken_t_connections_aborted_total", {"reason": "http_send_stalled"}
    )
    return value or 0.0


def test_keep_alive_deadline_starts_once_the_client_has_the_response() -> None:
    held: list[Deferred[Any]] = []
    clock, channel, transport, metrics = serve(held)
    channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    channel.pauseProducing()  # the transport's buffer is full: what we write now is not out yet
    held[0].callback({"done": True})
    assert b"200 OK" in transport.value()
    clock.advance(8)  # past the 5 s header deadline, within the 10 s send timeout
    assert not transport.disconnecting
    channel.resumeProducing()  # every byte is out: the wait for the next request begins
    clock.advance(4.5)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting and aborted(metrics) == 1 and stalled(metrics) == 0


def test_a_response_the_client_keeps_taking_is_not_cut_one_it_stops_taking_is() -> None:
    held: list[Deferred[Any]] = []
    clock, channel, transport, metrics = serve(held)
    channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(120)  # our own slowness is not the client's
    for _ in range(10):  # 30 s of a slow client: the transport fills and drains every 3 s
        channel.pauseProducing()
        clock.advance(3)
        channel.resumeProducing()
    assert not transport.disconnecting
    channel.pauseProducing()  # ... and now it takes nothing
    clock.advance(9)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting and stalled(metrics) == 1 and aborted(metrics) == 0


def test_a_response_cut_by_the_connection_loss_is_logged() -> None:
    _, channel, _, _ = serve([])
    channel.dataReceived(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    with capturedLogs() as events:
        channel.connectionLost(Failure(ConnectionLost("gone")))
    lines = [e["log_format"].format(**e) for e in events if e.get("log_namespace") == "kraken.http"]
    assert len(lines) == 1
    assert lines[0].startswith(
        "the connection from 10.0.0.9 was lost 10 bytes into a 100-byte response body (GET /stream)"
    )
