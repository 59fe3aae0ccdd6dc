"""``twistd kraken-tracker``: hands out peers per blob and proxies metainfo from origins."""

from __future__ import annotations

from typing import Any

from twisted.application.internet import TimerService

from kraken.core.config import Key, KrakenOptions, common_schema
from kraken.core.http import make_site
from kraken.core.service import KrakenService
from kraken.p2p.origins import OriginCluster
from kraken.tracker.peerstore import PeerStore
from kraken.tracker.server import TrackerAPI


class Options(KrakenOptions):
    tapname = "kraken-tracker"
    schema = {
        **common_schema(listen=["tls:tcp:15001:interface=127.0.0.1"]),
        "tracker": {
            "origins": Key("list", ["127.0.0.1:15002"], "host:port of origins to ask for owners, metainfo"),
            "announce_interval": Key("float", 3.0, "seconds between a peer's announces", minimum=0.05),
            "announce_limit": Key("int", 50, "most peers handed out per announce", minimum=1),
            "peer_ttl": Key("float", 3600.0, "forget a peer this long after its last announce", minimum=1),
            "origin_cache_ttl": Key("float", 10.0, "seconds to remember owners and origin peer contexts"),
        },
    }


def makeService(options: Options, reactor: Any = None) -> KrakenService:
    config = options.config
    svc = KrakenService("tracker", config, reactor)
    section = config["tracker"]
    store = PeerStore(svc.reactor, section["peer_ttl"])
    origins = OriginCluster(svc.reactor, section["origins"], svc.tls) if section["origins"] else None
    api = TrackerAPI(
        svc.reactor,
        store,
        origins,
        svc.metrics,
        section["announce_interval"],
        section["announce_limit"],
        section["origin_cache_ttl"],
    )
    site = make_site(api.router(), svc.metrics)
    svc.listen_all("http", config["listen"], site, allowed_roles={"agent", "origin", "client", "proxy"})
    TimerService(60, store.purge).setServiceParent(svc)
    return svc
