"""Requests refused before routing get a real HTTP answer, not a silently closed connection.

twisted.web's ``HTTPChannel`` drops a connection whose request line or a header line is longer
than its line limit, answers a bare ``400`` when the headers are too many or too large, and
fails with an unhandled error on a ``Content-Length`` of thousands of digits.
:class:`LimitedChannel` answers ``414 URI Too Long`` for an over-long request line, ``431
Request Header Fields Too Large`` for headers over the limits and ``413`` for such a length,
with a JSON body, then closes.
:func:`write_early_answer` is the one way to answer before a request reached a resource (also
used for bodies refused at their headers, see :mod:`kraken.core.streaming`).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from twisted.logger import Logger
from twisted.web.http import RESPONSES, HTTPChannel

from kraken.core.offenders import OncePerOffender
from kraken.core.tls import peer_identity

log = Logger(namespace="kraken.http.limits")

MAX_REQUEST_LINE = 8192  # bytes of "METHOD target HTTP/1.1"
MAX_HEADER_BYTES = 16384  # request line and every header line together (twisted.web's limit)
MAX_HEADERS = 500  # header lines (twisted.web's limit)
MAX_LENGTH_DIGITS = 18  # a Content-Length of more digits (an exabyte) is refused at once

_offenders = OncePerOffender()
_CODES = {413: "BODY_TOO_LARGE", 414: "URI_TOO_LONG", 431: "HEADERS_TOO_LARGE"}
_REASONS = {413: b"Content Too Large", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class RefusalCounter(Protocol):
    def labels(self, *values: str) -> Any: ...


def client_name(transport: Any) -> str:
    """The client as limits and logs name it: its certificate's name under mutual TLS, else its address."""
    identity = peer_identity(transport)
    if identity is not None:
        return identity.name
    peer = transport.getPeer() if transport is not None else None
    return str(getattr(peer, "host", "unknown"))


def write_early_answer(
    transport: Any, status: int, body: bytes, content_type: str = "application/json"
) -> None:
    """Write a complete ``Connection: close`` response to *transport*; the caller then closes it."""
    reason = _REASONS.get(status) or RESPONSES.get(status, b"Error")
    head = (
        b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % (status, reason, content_type.encode("latin-1"), len(body))
    )
    transport.write(head + body)


def log_refusal(limit: str, who: str, message: str) -> None:
    """Log a refusal once per (limit, client)."""
    if _offenders.first(limit, who):
        log.warn("refused a request from {who}: {message} (logged once per client)", who=who, message=message)


class LimitedChannel(HTTPChannel):
    """An ``HTTPChannel`` that answers ``414``/``431`` instead of dropping the connection.

    A site may carry a ``refusals`` counter (labelled by status) to count what is refused here.
    """

    max_request_line = MAX_REQUEST_LINE
    totalHeadersSize = MAX_HEADER_BYTES
    maxHeaders = MAX_HEADERS

    refused = False
    request_line = b""  # the current request's "METHOD target HTTP/x.y", kept for body routing
    head_lines = 0  # non-empty lines of the current request's head so far, request line included
    head_bytes = 0

    def dataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self.refused:
            return
        if not line:  # the end of a request's head (or an empty line before a request)
            self.head_lines = self.head_bytes = 0
            super().lineReceived(line)
            return
        self.head_lines += 1
        self.head_bytes += len(line)
        if self.head_lines == 1:
            self.request_line = line
        if self.head_lines == 1 and len(line) > self.max_request_line:
            self.refuse(414, f"request line over {self.max_request_line} bytes")
            return
        if self.head_bytes > self.totalHeadersSize or self.head_lines - 1 > self.maxHeaders:
            message = f"request headers over {self.totalHeadersSize} bytes or {self.maxHeaders} lines"
            self.refuse(431, message)
            return
        if self.head_lines > 1 and line[:15].lower() == b"content-length:":
            declared = line[15:].strip(b" \t")
            if declared.isdigit() and len(declared) > MAX_LENGTH_DIGITS:  # twisted.web's int() would raise
                self.refuse(413, f"a declared body of {len(declared)} digits")
                return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self.head_lines == 0:
            self.refuse(414, f"request line over {self.MAX_LENGTH} bytes")
        else:
            self.refuse(431, f"a header line over {self.MAX_LENGTH} bytes")

    def refuse(self, status: int, message: str) -> None:
        """Answer *status* with a JSON error body and close; nothing more is read."""
        self.refused = True
        who = client_name(self.transport)
        log_refusal(str(status), who, message)
        counter: RefusalCounter | None = getattr(getattr(self, "site", None), "refusals", None)
        if counter is not None:
            counter.labels(str(status)).inc()
        code = _CODES.get(status, "BAD_REQUEST")
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        write_early_answer(self.transport, status, body)
        self.loseConnection()
