"""Bodies routed at their headers: refused at once (413 before any body byte), or bounded in memory."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import Request

from kraken.core import streaming
from kraken.core.http import make_site
from kraken.core.metrics import Metrics
from kraken.core.streaming import BodyRefused, BodySink, BufferedBody


class Echo(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        content = request.content
        assert content is not None
        content.seek(0)
        return b"got " + content.read()


class Router:
    def body_sink(self, request: Request, method: bytes, uri: bytes, length: int | None) -> BodySink | None:
        if length is not None and length > 10:
            raise BodyRefused(413, b'{"too":"big"}')
        return BufferedBody(10)


def _channel() -> tuple[Any, StringTransport, Clock]:
    site = make_site(Echo(), Metrics("test"), body_router=Router())
    clock = Clock()
    site.reactor = clock  # the clock twisted.web gives its channels' timers
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport, clock


def test_declared_body_over_the_limit_is_answered_before_it_is_read() -> None:
    channel, transport, clock = _channel()
    channel.dataReceived(b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n")
    answer = transport.value()
    assert answer.startswith(b"HTTP/1.1 413 Content Too Large\r\n") and answer.endswith(b'{"too":"big"}')
    assert not transport.disconnecting  # still reading, so the answer is not lost to a reset
    channel.dataReceived(b"y" * 1000)
    assert transport.value() == answer  # nothing more is answered
    clock.advance(streaming.LINGER_SECONDS)
    assert transport.disconnecting


def test_no_100_continue_and_an_immediate_close_for_an_expecting_client() -> None:
    channel, transport, _ = _channel()
    channel.dataReceived(b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 99\r\n"
                         b"Expect: 100-continue\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 413 ") and b"100 Continue" not in transport.value()
    assert transport.disconnecting


def test_the_drain_is_bounded() -> None:
    channel, transport, _ = _channel()
    channel.dataReceived(b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n")
    channel.dataReceived(b"z" * (streaming.LINGER_BYTES + 1))
    assert transport.disconnecting


def test_chunked_bodies_are_bounded_in_memory() -> None:
    channel, transport, _ = _channel()
    channel.dataReceived(b"PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n0\r\n\r\n")
    assert transport.value().endswith(b"got hello")
    body = BufferedBody(4)
    body.write(b"abc")
    body.write(b"de")
    assert body.overflowed and body.received == 5 and body.read() == b""
