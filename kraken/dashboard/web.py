"""The dashboard's HTTP side: the static pages and ``/config.json`` (where the WebSocket is)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.static import File

STATIC = Path(__file__).with_name("static")
SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    b"style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
}


class StaticPages(File):
    """The files under ``static/`` with security headers; ``/`` is ``index.html``."""

    def render(self, request: Request) -> Any:
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        return super().render(request)

    def directoryListing(self) -> Resource:
        return self.childNotFound


class ClientConfig(Resource):
    """``/config.json``: the WebSocket's port and scheme, read once the listener is bound."""

    isLeaf = True

    def __init__(self, describe: Callable[[], dict[str, Any]]) -> None:
        super().__init__()
        self.describe = describe

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(self.describe()).encode()


def static_pages() -> StaticPages:
    pages = StaticPages(str(STATIC))
    pages.indexNames = ["index.html"]
    return pages
