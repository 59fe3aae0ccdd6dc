"""A twisted.web ``Site`` for a registry: the API, ``/health``, ``/metrics``, streamed uploads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime, ITCPTransport
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from kraken.core.config import HTTPSection
from kraken.core.http import KrakenHTTPChannel, Router, make_site
from kraken.core.metrics import Metrics
from kraken.registry.api import RegistryResource

TLS_HANDSHAKE = b"\x16"


class RegistryChannel(KrakenHTTPChannel):
    """Closes at once when a client opens with a TLS handshake on a plain listener.

    Registry clients (skopeo, docker) try HTTPS first and fall back to HTTP; without this
    they wait ten seconds for a handshake timeout on every connection.
    """

    _first_data = True

    def dataReceived(self, data: bytes) -> None:
        if self._first_data:
            self._first_data = False
            if data[:1] == TLS_HANDSHAKE and ITCPTransport.providedBy(self.transport):
                self.transport.abortConnection()
                return
        super().dataReceived(data)


class WithRoutes(Resource):
    """The registry API, and *routes* for the requests they match (the proxy's preheat, prefetch)."""

    isLeaf = True

    def __init__(self, api: RegistryResource, routes: Router) -> None:
        super().__init__()
        self.api = api
        self.routes = routes

    def render(self, request: Request) -> Any:
        path = request.path.decode("utf-8", "replace")
        if self.routes.handler_for(request.method.decode("ascii", "replace"), path) is not None:
            return self.routes.render(request)
        return self.api.render(request)


def make_registry_site(
    api: RegistryResource,
    metrics: Metrics,
    health_checks: dict[str, Callable[[], bool]] | None = None,
    http: HTTPSection | None = None,
    reactor: IReactorTime | None = None,
    routes: Router | None = None,
) -> Site:
    return make_site(
        WithRoutes(api, routes) if routes is not None else api, metrics, health_checks, body_router=api,
        http=http, reactor=reactor, channel=RegistryChannel
    )
