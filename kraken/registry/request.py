"""A twisted.web ``Request`` that hands upload bodies to the registry as they arrive."""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure
from twisted.web.server import Request

from kraken.registry.uploads import ChunkSink


class RegistryRequest(Request):
    """Asks the site's ``upload_router`` for a body sink once the headers are in.

    twisted.web keeps the request line on the channel until the body is complete; it is read
    here so the body can be routed before the first byte of it arrives.
    """

    def gotLength(self, length: int | None) -> None:
        router = getattr(getattr(self.channel, "site", None), "upload_router", None)
        method = getattr(self.channel, "_command", None)
        uri = getattr(self.channel, "_path", None)
        sink = None
        if router is not None and method is not None and uri is not None:
            sink = router.body_sink(method.upper(), uri, self.requestHeaders, length)
        if sink is None:
            super().gotLength(length)
        else:
            self.content = sink

    def connectionLost(self, reason: Failure) -> None:
        content: Any = getattr(self, "content", None)
        if isinstance(content, ChunkSink) and not self.finished:
            content.abort()
        super().connectionLost(reason)
