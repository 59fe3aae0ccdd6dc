"""Request bodies written where they belong as they arrive, instead of twisted.web's spool.

A site built with ``requestFactory=streaming_requests(router)`` asks *router*, once a request's
headers are in and before any body byte, for a :class:`BodySink`.
The sink then receives the body chunk by chunk (``handleContentChunk`` → ``write``) and sits
in ``request.content`` for the handler. Requests the router declines (``None``) keep the
normal buffered body. A router that raises :class:`BodyRefused` gets its answer sent at once,
before any body byte is read (no ``100 Continue``), and the connection closed.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request

from kraken.core.httplimits import write_early_answer

LINGER_BYTES = 16 * 1024 * 1024  # body bytes read and dropped after an early answer, at most
LINGER_SECONDS = 10.0


class BodySink:
    """Where a request body goes; the file-object surface twisted.web expects of ``content``.

    Subclasses implement ``write`` (count what they got in ``received``) and ``abort`` (undo:
    the request failed or its connection was lost before it finished).
    """

    received = 0

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def tell(self) -> int:
        return self.received

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass


class BodyRefused(Exception):
    """Raised by a body router to refuse a request at its headers with *status* and *body*."""

    def __init__(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.content_type = content_type


class DroppedBody(BodySink):
    """The body of a refused request: counted and dropped; past *limit* bytes, *stop* is called."""

    def __init__(self, limit: int, stop: Callable[[], None]) -> None:
        self.limit = limit
        self.stop = stop

    def write(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.limit:
            self.stop()

    def abort(self) -> None:
        pass


class BufferedBody(BodySink):
    """A small body kept in memory; past *limit* bytes it is dropped and ``overflowed`` is set.

    For requests whose body is read whole (JSON, manifests) when its length is not declared
    (chunked): twisted.web would spool any amount of it to a temporary file.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = io.BytesIO()
        self.overflowed = False

    def write(self, data: bytes) -> None:
        self.received += len(data)
        if self.overflowed:
            return
        if self.received > self.limit:
            self.overflowed = True
            self.buffer = io.BytesIO()
            return
        self.buffer.write(data)

    def abort(self) -> None:
        self.buffer = io.BytesIO()

    def tell(self) -> int:
        return self.buffer.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.buffer.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        return self.buffer.read(size)


class BodyRouter(Protocol):
    def body_sink(self, request: Request, method: bytes, uri: bytes, length: int | None) -> BodySink | None:
        """A sink for the body of *request* (headers in ``request.requestHeaders``), or ``None``.

        Raises :class:`BodyRefused` to answer at once without reading the body.
        """


class StreamingRequest(Request):
    """Asks its ``body_router`` for a body sink once the headers are in.

    Needs the site's channel to be a :class:`kraken.core.httplimits.LimitedChannel` (every
    ``make_site`` site's is), which keeps the request line; without it bodies are buffered.
    """

    refused = False
    linger: IDelayedCall | None = None

    def __init__(self, channel: HTTPChannel, queued: Any, body_router: BodyRouter) -> None:
        super().__init__(channel, queued)
        self.body_router = body_router

    def gotLength(self, length: int | None) -> None:
        router = self.body_router
        # twisted.web gives the request its method and URI only once the body is in.
        parts = getattr(self.channel, "request_line", b"").split(b" ")
        sink = None
        if len(parts) == 3:
            method, uri = parts[0], parts[1]
            try:
                sink = router.body_sink(self, method.upper(), uri, length)
            except BodyRefused as refusal:
                self.refuse(refusal)
                return
        if sink is None:
            super().gotLength(length)
        else:
            self.content = sink

    def refuse(self, refusal: BodyRefused) -> None:
        """Answer now, before the body; the request never reaches a resource.

        A client that asked ``Expect: 100-continue`` sends no body: the connection closes at
        once. Others may be sending the body before they read any answer; closing a socket
        with unread data resets it and can destroy the answer in flight, so up to
        :data:`LINGER_BYTES` of the body are read and dropped (for at most
        :data:`LINGER_SECONDS`) before closing.
        """
        self.refused = True
        expects = self.requestHeaders.getRawHeaders(b"expect") or []
        self.requestHeaders.removeHeader(b"expect")  # no "100 Continue" after the answer
        self.content = DroppedBody(LINGER_BYTES, self.close_refused)
        write_early_answer(self.channel.transport, refusal.status, refusal.body, refusal.content_type)
        if any(e.lower() == b"100-continue" for e in expects):
            self.close_refused()
        else:
            self.linger = self.channel.callLater(LINGER_SECONDS, self.close_refused)

    def close_refused(self) -> None:
        if self.linger is not None and self.linger.active():
            self.linger.cancel()
        self.linger = None
        if self.channel is not None:
            self.channel.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.refused:
            self.close_refused()  # the whole body was dropped; the answer is out
        else:
            super().requestReceived(command, path, version)

    def connectionLost(self, reason: Failure) -> None:
        if self.linger is not None and self.linger.active():
            self.linger.cancel()
        content: Any = getattr(self, "content", None)
        if isinstance(content, BodySink) and not self.finished:
            content.abort()
        super().connectionLost(reason)


def streaming_requests(router: BodyRouter) -> Callable[[HTTPChannel, Any], StreamingRequest]:
    """A ``Site.requestFactory`` whose requests ask *router* where their bodies go."""

    def make_request(channel: HTTPChannel, queued: Any) -> StreamingRequest:
        return StreamingRequest(channel, queued, router)

    return make_request
