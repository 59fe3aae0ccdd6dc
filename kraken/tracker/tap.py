"""``twistd kraken-tracker``: hands out peers per blob and proxies metainfo from origins."""

from __future__ import annotations

from dataclasses import dataclass

from twisted.application.internet import TimerService

from kraken.core.config import KrakenOptions, ServerConfig, listen_setting, section, setting
from kraken.core.http import make_site
from kraken.core.reactor import IServerReactor
from kraken.core.service import KrakenService
from kraken.p2p.origins import OriginCluster
from kraken.tracker.peerstore import PeerStore
from kraken.tracker.redisstore import RedisPeerStore
from kraken.tracker.server import TrackerAPI, parse_networks


@dataclass(frozen=True, kw_only=True)
class TrackerSection:
    origins: list[str] = setting(["127.0.0.1:15002"], "host:port of origins to ask for owners, metainfo")
    announce_interval: float = setting(3.0, "seconds between a peer's announces", minimum=0.05)
    announce_limit: int = setting(50, "most peers handed out per announce", minimum=1)
    peer_ttl: float = setting(3600.0, "forget a peer this long after its last announce", minimum=1)
    origin_cache_ttl: float = setting(10.0, "seconds to remember owners and origin peer contexts")
    max_peers_per_blob: int = setting(5000, "peer records kept per info hash; new ones get 429", minimum=1)
    max_blobs_per_peer: int = setting(
        10000, "peer records kept per announced IP address; new ones get 429", minimum=1
    )
    trusted_roles: list[str] = setting([], "certificate roles that may announce an address not their own")
    trusted_networks: list[str] = setting(
        [], "CIDRs whose clients may announce an address not their own (e.g. behind NAT)"
    )
    peer_store: str = setting("memory", "memory, or redis://HOST:PORT[/DB] shared by every tracker")


@dataclass(frozen=True, kw_only=True)
class TrackerConfig(ServerConfig):
    listen: list[str] = listen_setting(["tls:tcp:15001:interface=127.0.0.1"])
    tracker: TrackerSection = section(TrackerSection)


class Options(KrakenOptions[TrackerConfig]):
    tapname = "kraken-tracker"


def makeService(options: Options, reactor: IServerReactor | None = None) -> KrakenService:
    config = options.config
    svc = KrakenService("tracker", config, reactor)
    tracker = config.tracker
    try:
        trusted_networks = parse_networks(tracker.trusted_networks)
    except ValueError as e:
        raise SystemExit(f"kraken-tracker: {e}") from None
    store: PeerStore | RedisPeerStore
    if tracker.peer_store == "memory":
        store = PeerStore(
            svc.reactor,
            tracker.peer_ttl,
            max_peers_per_blob=tracker.max_peers_per_blob,
            max_blobs_per_peer=tracker.max_blobs_per_peer,
        )
    elif tracker.peer_store.startswith(("redis://", "rediss://", "unix://")):
        store = RedisPeerStore(svc.reactor, tracker.peer_store, tracker.peer_ttl,
                               tracker.max_peers_per_blob, tracker.max_blobs_per_peer)
    else:
        raise SystemExit(f"kraken-tracker: config error: tracker.peer_store: {tracker.peer_store!r} is "
                         "neither memory nor a redis:// URL")
    origins = OriginCluster(svc.reactor, tracker.origins, svc.tls) if tracker.origins else None
    if origins is not None:  # SIGHUP: a new tracker.origins list
        svc.on_config_reload(options.reread,
                             lambda new: origins.set_members(new.tracker.origins or origins.members))
    api = TrackerAPI(
        svc.reactor,
        store,
        origins,
        svc.metrics,
        tracker.announce_interval,
        tracker.announce_limit,
        tracker.origin_cache_ttl,
        trusted_roles=tracker.trusted_roles,
        trusted_networks=trusted_networks,
    )
    site = make_site(api.router(), svc.metrics, http=config.http, reactor=svc.reactor)
    svc.listen_all("http", config.listen, site, allowed_roles={"agent", "origin", "client", "proxy"})
    TimerService(60, store.purge).setServiceParent(svc)
    return svc
