"""``twistd kraken-agent``: downloads blobs from peers and origins, serves them on this host."""

from __future__ import annotations

from typing import Any

from kraken.agent.blobs import AgentBlobs
from kraken.agent.registry import make_agent_registry
from kraken.agent.server import AgentAPI
from kraken.agent.tracker_client import TrackerClient
from kraken.core.cas import CAStore
from kraken.core.config import Key, KrakenOptions, common_schema
from kraken.core.http import make_site
from kraken.core.httpclient import close_http_client, make_http_client
from kraken.core.sendfile import SendfileSender
from kraken.core.service import KrakenService
from kraken.p2p.config import advertised_host, bandwidth_schema, buckets, scheduler_config, scheduler_schema
from kraken.p2p.conn import PeerFactory
from kraken.p2p.scheduler import Scheduler
from kraken.p2p.service import SchedulerService
from kraken.p2p.storage import PieceStore


class Options(KrakenOptions):
    tapname = "kraken-agent"
    schema = {
        **common_schema(listen=["tcp:16000:interface=127.0.0.1"]),
        "agent": {
            "store": Key("path", "run/agent/store", "cache and download directory"),
            "peer_listen": Key("list", ["tls:tcp:16001:interface=127.0.0.1"], "peer-wire endpoints (tls:)"),
            "advertise_host": Key("str", None, "address peers dial (default: the peer listener's interface)"),
            "tracker": Key("str", "127.0.0.1:15001", "tracker host:port (or URL)"),
            "cache_tti": Key("float", 0.0, "delete blobs not read for this many seconds (0 = keep)"),
            "cache_ttl": Key("float", 0.0, "delete blobs older than this many seconds (0 = keep)"),
            "cleanup_interval": Key("float", 1800.0, "seconds between cache cleanups"),
        },
        "registry": {
            "listen": Key("list", ["tcp:5055:interface=127.0.0.1"], "read-only Docker registry endpoints"),
            "build_index": Key("str", None, "build-index URL for tag lookups"),
            "allow_cidrs": Key("list", [], "client networks allowed on the registry port"),
        },
        "scheduler": scheduler_schema(),
        "bandwidth": bandwidth_schema(),
    }


def makeService(options: Options, reactor: Any = None) -> KrakenService:
    config = options.config
    svc = KrakenService("agent", config, reactor)
    reactor = svc.reactor
    section = config["agent"]
    http = make_http_client(reactor, svc.tls)
    tracker = TrackerClient(reactor, section["tracker"], svc.tls, http)
    cas = CAStore(section["store"])
    blobs = AgentBlobs(reactor, PieceStore(cas), tracker, svc.metrics)
    egress, ingress = buckets(config["bandwidth"], reactor)
    scheduler = Scheduler(
        reactor,
        svc.tls,
        scheduler_config(config["scheduler"]),
        seed_source=blobs.seed,
        announcer=tracker.announce,
        committer=blobs.commit,
        metrics=svc.metrics,
        egress=egress,
        ingress=ingress,
    )
    blobs.scheduler = scheduler
    tracker.peer_id = scheduler.peer_id
    tracker.ip = advertised_host(section["advertise_host"], section["peer_listen"])

    api = AgentAPI(blobs, scheduler, svc.metrics, SendfileSender(reactor))
    site = make_site(api.router(), svc.metrics, health_checks={"scheduler": scheduler.probe})
    svc.listen_all("http", config["listen"], site, allowed_roles={"client", "agent"})
    for description in section["peer_listen"]:
        svc.listen("peer", description, PeerFactory(scheduler), allowed_roles={"agent", "origin"})
    tracker.port_of = lambda: svc.ports.get("peer", 0)
    SchedulerService(scheduler, on_stop=lambda: close_http_client(http)).setServiceParent(svc)

    if section["cache_tti"] > 0 or section["cache_ttl"] > 0:
        from twisted.application.internet import TimerService

        TimerService(
            section["cleanup_interval"], cas.cleanup, section["cache_tti"], section["cache_ttl"]
        ).setServiceParent(svc)

    registry = config["registry"]
    if registry["listen"]:
        registry_site = make_agent_registry(
            blobs=blobs, config=config, tls=svc.tls, metrics=svc.metrics, reactor=reactor
        )
        svc.listen_all("registry", registry["listen"], registry_site)
    return svc
