"""Request bodies written where they belong as they arrive, instead of twisted.web's spool.

A site built with ``requestFactory=streaming_requests(router)`` asks *router*, once a request's
headers are in and before any body byte, for a :class:`BodySink`.
The sink then receives the body chunk by chunk (``handleContentChunk`` → ``write``) and sits
in ``request.content`` for the handler. Requests the router declines (``None``) keep the
normal buffered body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request


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


class BodyRouter(Protocol):
    def body_sink(self, request: Request, method: bytes, uri: bytes, length: int | None) -> BodySink | None:
        """A sink for the body of *request* (headers in ``request.requestHeaders``), or ``None``."""


class StreamingRequest(Request):
    """Asks its ``body_router`` for a body sink once the headers are in.

    twisted.web keeps the request line on the channel until the body is complete; it is read
    here so the body can be routed before the first byte of it arrives.
    """

    def __init__(self, channel: HTTPChannel, queued: Any, body_router: BodyRouter) -> None:
        super().__init__(channel, queued)
        self.body_router = body_router

    def gotLength(self, length: int | None) -> None:
        router = self.body_router
        method = getattr(self.channel, "_command", None)
        uri = getattr(self.channel, "_path", None)
        sink = None
        if method is not None and uri is not None:
            sink = router.body_sink(self, method.upper(), uri, length)
        if sink is None:
            super().gotLength(length)
        else:
            self.content = sink

    def connectionLost(self, reason: Failure) -> None:
        content: Any = getattr(self, "content", None)
        if isinstance(content, BodySink) and not self.finished:
            content.abort()
        super().connectionLost(reason)


def streaming_requests(router: BodyRouter) -> Callable[[HTTPChannel, Any], StreamingRequest]:
    """A ``Site.requestFactory`` whose requests ask *router* where their bodies go."""

    def make_request(channel: HTTPChannel, queued: Any) -> StreamingRequest:
        return StreamingRequest(channel, queued, router)

    return make_request
