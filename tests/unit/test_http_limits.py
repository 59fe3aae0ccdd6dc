"""Every kraken HTTP site answers over-long request lines (414) and headers (431) before closing."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from kraken.core.http import Router, make_site
from kraken.core.metrics import Metrics


def _exchange(request: bytes) -> tuple[bytes, bool, Metrics]:
    metrics = Metrics("test")
    router = Router()
    router.route("GET", "/hello", lambda request: {"hi": 1})
    site = make_site(router, metrics)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.1.2.3", 5555))
    channel.makeConnection(transport)
    channel.dataReceived(request)
    return transport.value(), transport.disconnecting, metrics


def _refused(metrics: Metrics, status: str) -> float | None:
    return metrics.registry.get_sample_value("kraken_test_http_refused_total", {"status": status})


def test_long_request_line_is_414() -> None:
    for size in (9000, 20000):  # over our limit; over twisted.web's line limit
        answer, closed, metrics = _exchange(b"GET /" + b"a" * size + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 414 URI Too Long\r\n") and closed
        assert b'"URI_TOO_LONG"' in answer
        assert _refused(metrics, "414") == 1


def test_headers_over_the_limits_are_431() -> None:
    one_long = b"GET /hello HTTP/1.1\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n"
    many_bytes = b"GET /hello HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"c" * 100) for i in range(200))
    many_lines = b"GET /hello HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(501)) + b"\r\n"
    for request in (one_long, many_bytes, many_lines):
        answer, closed, metrics = _exchange(request)
        assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:80]
        assert closed and _refused(metrics, "431") == 1


def test_requests_within_the_limits_pass() -> None:
    headers = b"".join(b"X-%d: 1\r\n" % i for i in range(499))
    answer, closed, metrics = _exchange(b"GET /hello HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"
                                        b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.count(b"HTTP/1.1 200 OK") == 2 and not closed
    assert _refused(metrics, "431") is None


def test_a_content_length_of_thousands_of_digits_is_413() -> None:
    request = b"PUT /hello HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"
    answer, closed, metrics = _exchange(request)
    assert answer.startswith(b"HTTP/1.1 413 ") and closed and _refused(metrics, "413") == 1
