"""``twistd kraken-agent``: downloads blobs from peers and origins, serves them on this host."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application.internet import TimerService

from kraken.agent.blobs import AgentBlobs
from kraken.agent.readiness import AgentReadiness
from kraken.agent.registry import make_agent_registry
from kraken.agent.server import AgentAPI
from kraken.agent.tracker_client import TrackerClient
from kraken.core.cas import CAStore
from kraken.core.config import ConfigPath, KrakenOptions, ServerConfig, listen_setting, section, setting
from kraken.core.eviction import EvictionPolicy, Evictor
from kraken.core.http import make_site
from kraken.core.httpclient import close_http_client, make_http_client
from kraken.core.reactor import IServerReactor
from kraken.core.sendfile import SendfileSender
from kraken.core.service import KrakenService
from kraken.mirror.preload import PreloadAPI
from kraken.mirror.wiring import agent_name_mapper, checked_mirrors
from kraken.p2p.config import (
    BandwidthSection,
    SchedulerSection,
    advertised_host,
    buckets,
    scheduler_config,
)
from kraken.p2p.conn import PeerDialer, PeerFactory
from kraken.p2p.scheduler import Scheduler
from kraken.p2p.service import SchedulerService
from kraken.p2p.storage import PieceStore
from kraken.registry.auth import AuthSection, make_authenticator


@dataclass(frozen=True, kw_only=True)
class AgentSection:
    store: ConfigPath = setting("run/agent/store", "cache and download directory")
    peer_listen: list[str] = setting(["tls:tcp:16001:interface=127.0.0.1"], "peer-wire endpoints (tls:)")
    advertise_host: str | None = setting(None, "address peers dial (default: the peer listener's interface)")
    tracker: str = setting("127.0.0.1:15001", "tracker host:port (or URL); trackers, when set, wins")
    trackers: list[str] = setting([], "several trackers (host:port or URL): each blob hashed to its own, "
                                      "the next one when it does not answer")
    unavailable_timeout: float = setting(
        60.0, "seconds a download waits for a tracker and an origin to answer before it fails", minimum=0
    )
    cache_tti: float = setting(0.0, "delete blobs not read for this many seconds (0 = keep)")
    cache_ttl: float = setting(0.0, "delete blobs older than this many seconds (0 = keep)")
    cleanup_interval: float = setting(1800.0, "seconds between cache cleanups")
    disk_high_water: float = setting(0.0, "store utilisation (0..1) at which least recently read blobs are "
                                          "evicted (0 = no limit)", minimum=0)
    disk_low_water: float = setting(0.0, "evict down to this utilisation (0 = high water - 0.1)", minimum=0)
    store_capacity: int = setting(0, "bytes the store may use (0 = its filesystem's size)", minimum=0)
    verify_on_serve: bool = setting(True, "re-hash blobs changed since last checked, before serving")


@dataclass(frozen=True, kw_only=True)
class AgentRegistrySection:
    listen: list[str] = setting(["tcp:5055:interface=127.0.0.1"], "read-only Docker registry endpoints")
    build_index: str | None = setting(None, "build-index URL for tag lookups")
    allow_cidrs: list[str] = setting([], "client networks allowed on the registry port")
    mirrors: dict[str, Any] = setting({}, "registry host (containerd's ?ns=) -> upstream (mirroring)")
    containerd_socket: str = setting("/run/containerd/containerd.sock", "containerd's socket (preload)")
    ctr: str = setting("ctr", "the ctr program preload runs")
    preload_timeout: float = setting(600.0, "seconds a preload may take", minimum=1)
    auth: AuthSection = section(AuthSection)


@dataclass(frozen=True, kw_only=True)
class AgentConfig(ServerConfig):
    listen: list[str] = listen_setting(["tcp:16000:interface=127.0.0.1"])
    agent: AgentSection = section(AgentSection)
    registry: AgentRegistrySection = section(AgentRegistrySection)
    scheduler: SchedulerSection = section(SchedulerSection)
    bandwidth: BandwidthSection = section(BandwidthSection)


class Options(KrakenOptions[AgentConfig]):
    tapname = "kraken-agent"


def makeService(options: Options, reactor: IServerReactor | None = None) -> KrakenService:
    config = options.config
    svc = KrakenService("agent", config, reactor)
    reactor = svc.reactor
    agent = config.agent
    http = make_http_client(reactor, svc.tls, {"tracker"})
    tracker = TrackerClient(reactor, agent.trackers or agent.tracker, svc.tls, http,
                            unavailable_timeout=agent.unavailable_timeout)
    svc.on_config_reload(options.reread,  # SIGHUP: a new tracker list
                         lambda new: tracker.set_trackers(new.agent.trackers or [new.agent.tracker]))
    cas = CAStore(agent.store)
    blobs = AgentBlobs(reactor, PieceStore(cas), tracker, svc.metrics, agent.verify_on_serve)
    egress, ingress = buckets(config.bandwidth, reactor)
    scheduler = Scheduler(
        reactor,
        scheduler_config(config.scheduler),
        dialer=PeerDialer(reactor, svc.tls),
        seed_source=blobs.seed,
        announcer=tracker.announce,
        committer=blobs.commit,
        metrics=svc.metrics,
        egress=egress,
        ingress=ingress,
    )
    blobs.scheduler = scheduler
    tracker.peer_id = scheduler.peer_id
    tracker.ip = advertised_host(agent.advertise_host, agent.peer_listen)

    api = AgentAPI(blobs, scheduler, svc.metrics, SendfileSender(reactor))
    build_index = config.registry.build_index if config.registry.listen else None
    readiness = AgentReadiness(reactor, agent.trackers or [agent.tracker], build_index, svc.tls)
    readiness.checker.setServiceParent(svc)
    router = api.router()
    PreloadAPI(
        reactor, lambda: svc.ports.get("registry", 0),
        checked_mirrors(config.registry.mirrors, "registry.mirrors"), Path(f"{agent.store}-preload-hosts"),
        config.registry.containerd_socket, config.registry.ctr,
        config.registry.preload_timeout, metrics=svc.metrics,
    ).register(router)
    site = make_site(
        router, svc.metrics, health_checks={"scheduler": scheduler.probe}, http=config.http,
        reactor=reactor, ready_checks={"scheduler": scheduler.probe, "tracker": readiness.tracker_answers,
                                       "build_index": readiness.build_index_answers},
    )
    svc.listen_all("http", config.listen, site, allowed_roles={"client", "agent"})
    for description in agent.peer_listen:
        svc.listen("peer", description, PeerFactory(scheduler), allowed_roles={"agent", "origin"})
    tracker.port_of = lambda: svc.ports.get("peer", 0)
    SchedulerService(scheduler, on_stop=lambda: close_http_client(http)).setServiceParent(svc)

    policy = EvictionPolicy(agent.cache_tti, agent.cache_ttl, agent.disk_high_water, agent.disk_low_water,
                            agent.store_capacity)
    evictor = Evictor(reactor, cas, policy, svc.metrics, busy=blobs.busy, before_delete=blobs.let_go)
    if evictor.enabled:
        TimerService(agent.cleanup_interval, evictor.run).setServiceParent(svc)

    registry = config.registry
    if registry.listen:
        registry_site = make_agent_registry(
            blobs, registry.build_index, registry.allow_cidrs, svc.tls, svc.metrics, reactor, config.http,
            name_for=agent_name_mapper(registry.mirrors) if registry.mirrors else None,
            auth=make_authenticator(registry.auth, reactor, svc.metrics, "kraken-agent"),
        )
        svc.listen_all("registry", registry.listen, registry_site)
    return svc
