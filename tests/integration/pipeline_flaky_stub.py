"""A stub HTTP service that can be broken and fixed, and that wants a bearer token.

``python -m tests.integration.pipeline_flaky_stub PORT_FILE TOKEN`` listens on a loopback
port and writes it to PORT_FILE. ``POST /work`` with ``{"n": ...}`` answers ``{"done": n}``
(401 without ``Authorization: Bearer TOKEN``, 503 while broken); ``POST /_break`` and
``POST /_fix`` switch it; ``GET /_calls`` counts the ``/work`` requests.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Request, Site


class Flaky(Resource):
    isLeaf = True

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = f"Bearer {token}".encode()
        self.broken = False
        self.calls = 0

    def render(self, request: Request) -> bytes:
        status, body = self.answer(request)
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body).encode()

    def answer(self, request: Request) -> tuple[int, Any]:
        path = request.path.decode()
        if path == "/_break":
            self.broken = True
            return 200, {"broken": True}
        if path == "/_fix":
            self.broken = False
            return 200, {"broken": False}
        if path == "/_calls":
            return 200, {"calls": self.calls}
        if path != "/work":
            return 404, {"error": "no_route"}
        self.calls += 1
        if request.getHeader(b"authorization") != self.token:
            return 401, {"error": "unauthorized"}
        if self.broken:
            return 503, {"error": "broken"}
        assert request.content is not None
        return 200, {"done": json.loads(request.content.read() or b"{}").get("n")}


def main() -> None:
    port_file, token = sys.argv[1], sys.argv[2]
    port = reactor.listenTCP(0, Site(Flaky(token)), interface="127.0.0.1")
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port.getHost().port))
    os.replace(port_file + ".tmp", port_file)
    reactor.run()


if __name__ == "__main__":
    main()
