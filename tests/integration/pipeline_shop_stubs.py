"""The online shop's four stub services (spec 4.2) as one twisted.web process.

``python -m tests.integration.pipeline_shop_stubs PORTS_FILE`` listens on four loopback
ports (user, product, billing, notification), writes ``{"user": port, ...}`` to PORTS_FILE,
and records every request; ``GET /_calls`` on any port lists that service's requests.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

USERS = {"user-123": {"id": "user-123", "name": "Alice", "email": "alice@example.com"}}
PLUSH = {"id": "product-456", "title": "Kraken plush", "price": 42.5, "currency": "EUR"}
PRODUCTS = {"product-456": PLUSH, "product-999": {**PLUSH, "id": "product-999", "price": 5000}}


def _arg(request: Request, name: str) -> str | None:
    values = request.args.get(name.encode())
    return values[0].decode() if values else None


def user_service(method: str, path: str, request: Request) -> tuple[int, Any]:
    if method == "GET" and path.startswith("/users/"):
        user = USERS.get(path[len("/users/") :])
        return (200, user) if user else (404, {"error": "not_found"})
    if method == "POST" and path == "/users":
        return 201, {"id": "user-124", "name": _arg(request, "name"), "email": _arg(request, "email")}
    if method == "POST" and path == "/sessions":
        if _arg(request, "email") == "alice@example.com" and _arg(request, "password") == "secret":
            return 200, {"user_id": "user-123", "token": "token-abc"}
        return 401, {"error": "invalid_credentials"}
    return 404, {"error": "no_route"}


def product_service(method: str, path: str, request: Request) -> tuple[int, Any]:
    if method == "GET" and path.startswith("/products/"):
        product = PRODUCTS.get(path[len("/products/") :])
        return (200, product) if product else (404, {"error": "not_found"})
    if method == "GET" and path == "/products":
        return 200, {"items": [PLUSH]}
    return 404, {"error": "no_route"}


def billing_service(method: str, path: str, request: Request) -> tuple[int, Any]:
    if method == "POST" and path == "/bills":
        if float(_arg(request, "amount") or 0) > 1000:
            return 200, {"order_id": None, "status": "declined"}
        return 201, {"order_id": "789", "status": "paid"}
    return 404, {"error": "no_route"}


def notification_service(method: str, path: str, request: Request) -> tuple[int, Any]:
    if method == "POST" and path == "/emails":
        return 202, {"message_id": "msg-1", "status": "queued"}
    return 404, {"error": "no_route"}


class Stub(Resource):
    isLeaf = True

    def __init__(self, logic: Any) -> None:
        super().__init__()
        self.logic = logic
        self.calls: list[dict[str, Any]] = []

    def render(self, request: Request) -> bytes:
        method, path = request.method.decode(), request.path.decode()
        request.setHeader(b"content-type", b"application/json")
        if path == "/_calls":
            return json.dumps(self.calls).encode()
        self.calls.append(
            {
                "method": method,
                "path": path,
                "query": {k.decode(): v[0].decode() for k, v in request.args.items()},
                "accept": (request.getHeader("accept") or ""),
            }
        )
        status, body = self.logic(method, path, request)
        request.setResponseCode(status)
        return json.dumps(body).encode()


def main(ports_file: str) -> None:
    ports = {}
    for name, logic in (
        ("user", user_service),
        ("product", product_service),
        ("billing", billing_service),
        ("notification", notification_service),
    ):
        port = reactor.listenTCP(0, Site(Stub(logic)), interface="127.0.0.1")
        ports[name] = port.getHost().port
    with open(ports_file + ".tmp", "w") as f:
        json.dump(ports, f)
    import os

    os.replace(ports_file + ".tmp", ports_file)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1])
