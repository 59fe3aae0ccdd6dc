"""``twistd -n kraken-dashboard``: one web UI for the kraken servers, pushed live over a WebSocket."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service

from kraken.core.config import KrakenOptions, ServerConfig, listen_setting, section, setting
from kraken.core.endpoints import is_tls
from kraken.core.http import make_site
from kraken.core.reactor import IServerReactor
from kraken.core.service import KrakenService
from kraken.core.tls import TLSConfigError
from kraken.dashboard.adapters.health import HealthAdapter
from kraken.dashboard.adapters.nodes import NodesAdapter
from kraken.dashboard.adapters.pipelines import PipelinesAdapter
from kraken.dashboard.adapters.registry import RegistryAdapter
from kraken.dashboard.adapters.swarm import SwarmAdapter
from kraken.dashboard.adapters.topics import TopicsAdapter
from kraken.dashboard.auth import Access
from kraken.dashboard.hub import Hub
from kraken.dashboard.sources import Fetcher, Server, parse_server
from kraken.dashboard.web import ClientConfig, static_pages
from kraken.dashboard.websocket import DashboardSocketFactory

LOOPBACK = "interface=127.0.0.1"
URLS = "URLs (https://host:port, or http:// for a plain loopback listener)"


@dataclass(frozen=True, kw_only=True)
class ServersSection:
    agents: list[str] = setting([], f"agents' HTTP API {URLS}")
    origins: list[str] = setting([], f"origins' HTTP API {URLS}")
    trackers: list[str] = setting([], f"trackers' {URLS}")
    build_index: list[str] = setting([], f"build-indexes' {URLS} (Registry page)")
    proxies: list[str] = setting([], f"proxies' registry {URLS} (image sizes)")
    state: list[str] = setting([], f"state engines' REST {URLS} (Nodes page)")
    pipeline: list[str] = setting([], f"pipeline servers' {URLS}")
    pubsub: list[str] = setting([], f"pub/sub admin API {URLS} (Topics page)")
    pipeline_token: str | None = setting(None, "bearer token the pipeline servers require (api_token)")


@dataclass(frozen=True, kw_only=True)
class AuthSection:
    viewer_tokens: list[str] = setting([], "tokens that may view; empty: anyone reaching the port may view")
    operator_tokens: list[str] = setting([], "tokens that may also act (power, replay)")
    operator_certs: list[str] = setting(
        [], "browser client-certificate names that may act (on a tls: listener)"
    )


@dataclass(frozen=True, kw_only=True)
class DashboardSection:
    ws_listen: list[str] = setting([f"tcp:8471:{LOOPBACK}"], "endpoints of the browsers' WebSocket")
    poll_interval: float = setting(1.0, "seconds between reads of the watched page's servers", minimum=0.1)
    request_timeout: float = setting(5.0, "seconds a server has to answer one read", minimum=0.1)
    history: int = setting(120, "points kept per sparkline", minimum=2)
    max_clients: int = setting(100, "browsers connected at once", minimum=1)
    login_timeout: float = setting(10.0, "seconds a new WebSocket has to log in", minimum=0.1)


@dataclass(frozen=True, kw_only=True)
class DashboardConfig(ServerConfig):
    listen: list[str] = listen_setting([f"tcp:8470:{LOOPBACK}"])
    dashboard: DashboardSection = section(DashboardSection)
    servers: ServersSection = section(ServersSection)
    auth: AuthSection = section(AuthSection)


class Options(KrakenOptions[DashboardConfig]):
    tapname = "kraken-dashboard"


class _HubService(Service):
    def __init__(self, hub: Hub, fetcher: Fetcher) -> None:
        self.hub = hub
        self.fetcher = fetcher

    def startService(self) -> None:
        super().startService()
        self.hub.start()

    def stopService(self) -> Any:
        super().stopService()
        self.hub.stop()
        return self.fetcher.close()


def _servers(section: ServersSection) -> dict[str, list[Server]]:
    kinds = {
        "agent": section.agents, "origin": section.origins, "tracker": section.trackers,
        "build-index": section.build_index, "proxy": section.proxies, "state": section.state,
        "pipeline": section.pipeline, "pubsub": section.pubsub,
    }
    try:
        return {kind: [parse_server(kind, u) for u in urls] for kind, urls in kinds.items()}
    except ValueError as e:
        raise SystemExit(f"kraken-dashboard: servers: {e}") from None


def makeService(options: Options, reactor: IServerReactor | None = None) -> KrakenService:
    config = options.config
    try:
        svc = KrakenService("dashboard", config, reactor)
    except TLSConfigError as e:
        raise SystemExit(f"kraken-dashboard: {e}") from None
    servers = _servers(config.servers)
    token = config.servers.pipeline_token
    fetcher = Fetcher(
        svc.reactor, svc.tls, config.dashboard.request_timeout, {"pipeline": token} if token else None
    )
    everyone = [s for group in servers.values() for s in group]
    history = config.dashboard.history
    nodes = NodesAdapter(fetcher, servers["state"])
    pipelines = PipelinesAdapter(fetcher, servers["pipeline"])
    hub = Hub(
        svc.reactor,
        {
            "swarm": SwarmAdapter(fetcher, servers["agent"], servers["origin"], svc.reactor, history),
            "nodes": nodes,
            "pipelines": pipelines,
            "topics": TopicsAdapter(fetcher, servers["pubsub"]),
            "registry": RegistryAdapter(fetcher, servers["build-index"], servers["proxy"]),
            "health": HealthAdapter(fetcher, everyone, svc.reactor, history),
        },
        config.dashboard.poll_interval,
    )
    _HubService(hub, fetcher).setServiceParent(svc)
    auth = config.auth
    access = Access(tuple(auth.viewer_tokens), tuple(auth.operator_tokens), tuple(auth.operator_certs))
    sockets = DashboardSocketFactory(
        hub,
        access,
        requests={"node": lambda m: nodes.detail(m.get("server"), m.get("node"))},
        actions={
            "power": lambda m: nodes.power(m.get("server"), m.get("node"), m.get("phys")),
            "replay": lambda m: pipelines.replay(m.get("server"), m.get("pipeline")),
        },
        clock=svc.reactor,
        max_clients=config.dashboard.max_clients,
        login_timeout=config.dashboard.login_timeout,
    )
    ws_tls = any(is_tls(d) for d in config.dashboard.ws_listen)

    def describe() -> dict[str, Any]:
        return {"ws_port": svc.ports.get("ws"), "ws_scheme": "wss" if ws_tls else "ws",
                "login": "token" if access.viewer_tokens else "optional"}

    site = make_site(
        static_pages(), svc.metrics, health_checks={"hub": lambda: hub.loop.running},
        extra={"config.json": ClientConfig(describe)}, http=config.http, reactor=svc.reactor,
    )
    roles = {"client"}
    svc.listen_all("http", config.listen, site, allowed_roles=roles)
    svc.listen_all("ws", config.dashboard.ws_listen, sockets, allowed_roles=roles)
    return svc
