"""``twistd kraken-origin``: a seeder of blobs, owning digests by rendezvous hashing."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from twisted.application.internet import TimerService

from kraken.backends.base import BackendRouter
from kraken.core.cas import CAStore
from kraken.core.config import (
    ConfigPath,
    KrakenOptions,
    ServerConfig,
    listen_setting,
    section,
    setting,
)
from kraken.core.digest import Digest
from kraken.core.eviction import EvictionPolicy, Evictor
from kraken.core.health import healthy_first
from kraken.core.http import make_site
from kraken.core.httpclient import close_http_client, make_http_client
from kraken.core.journal import JOURNAL_FILE, open_journal
from kraken.core.reactor import IServerReactor
from kraken.core.service import KrakenService
from kraken.mirror.wiring import origin_routes
from kraken.origin.blobs import OriginBlobs
from kraken.origin.gc import OriginSweeper
from kraken.origin.membership import ClusterHealth, Membership, changed
from kraken.origin.replication import OriginPlacement, ReplicationService, Replicator
from kraken.origin.server import OriginAPI
from kraken.origin.writeback import WriteBackService
from kraken.p2p.config import (
    BandwidthSection,
    SchedulerSection,
    advertised_host,
    buckets,
    for_origin,
    scheduler_config,
)
from kraken.p2p.conn import PeerDialer, PeerFactory
from kraken.p2p.metainfo import parse_thresholds
from kraken.p2p.origins import OriginClient
from kraken.p2p.scheduler import Scheduler
from kraken.p2p.service import SchedulerService

CLIENT_ROLES = {"agent", "origin", "tracker", "proxy", "build-index", "client"}


@dataclass(frozen=True, kw_only=True)
class OriginSection:
    store: ConfigPath = setting("run/origin/store", "directory of the content-addressed store")
    peer_listen: list[str] = setting(["tls:tcp:15003:interface=127.0.0.1"], "peer-wire endpoints (tls:)")
    advertise_host: str | None = setting(None, "address peers dial (default: the peer listener's interface)")
    cluster: list[str] = setting([], "host:port of every origin's HTTP API (empty: this origin alone)")
    self_address: str | None = setting(None, "this origin's host:port in cluster (default host:bound port)")
    max_replica: int = setting(2, "how many origins own each digest", minimum=1)
    piece_lengths: dict[Any, Any] = setting({0: 4 * 1024 * 1024}, "blob size threshold -> piece length")
    write_roles: list[str] = setting(["proxy", "client", "origin", "build-index"], "roles that may upload")
    mirrors: dict[str, Any] = setting({}, "registry host -> upstream {url, credentials} (mirroring)")
    backends: list[dict[str, Any]] = setting(
        [], "[{namespace: REGEX, backend: {type: fs, root: DIR}}], first wins"
    )
    cache_tti: float = setting(0.0, "delete blobs not read for this many seconds (0 = keep)")
    cache_ttl: float = setting(0.0, "delete blobs stored longer than this many seconds (0 = keep)")
    cleanup_interval: float = setting(1800.0, "seconds between cache cleanups")
    disk_high_water: float = setting(0.0, "store utilisation (0..1) at which least recently read blobs are "
                                          "evicted (0 = no limit)", minimum=0)
    disk_low_water: float = setting(0.0, "evict down to this utilisation (0 = high water - 0.1)", minimum=0)
    store_capacity: int = setting(0, "bytes the store may use (0 = its filesystem's size)", minimum=0)
    max_upload_size: int = setting(64 * 1024**3, "largest upload in bytes", minimum=0)
    writeback_retry_first: float = setting(1.0, "seconds to the first write-back retry", minimum=0)
    writeback_retry_cap: float = setting(300.0, "longest wait between write-back retries", minimum=0)
    verify_on_serve: bool = setting(True, "re-hash blobs changed since last checked, before serving")
    health_interval: float = setting(2.0, "seconds between health checks of the other cluster members",
                                     minimum=0.05)
    health_timeout: float = setting(2.0, "seconds after which a health check failed", minimum=0.05)
    health_fails: int = setting(3, "failed checks in a row that make a member unhealthy", minimum=1)
    health_passes: int = setting(2, "good checks in a row that make it healthy again", minimum=1)


@dataclass(frozen=True, kw_only=True)
class OriginConfig(ServerConfig):
    listen: list[str] = listen_setting(["tls:tcp:15002:interface=127.0.0.1"])
    origin: OriginSection = section(OriginSection)
    scheduler: SchedulerSection = section(SchedulerSection)
    bandwidth: BandwidthSection = section(BandwidthSection)


class Options(KrakenOptions[OriginConfig]):
    tapname = "kraken-origin"


def _resolve_backend_paths(entries: list[Any], base: Path) -> list[Any]:
    out = []
    for entry in entries:
        entry = dict(entry)
        backend = dict(entry.get("backend") or {})
        if backend.get("type") == "fs" and "root" in backend and not Path(backend["root"]).is_absolute():
            backend["root"] = str(base / backend["root"])
        entry["backend"] = backend
        out.append(entry)
    return out


def makeService(options: Options, reactor: IServerReactor | None = None) -> KrakenService:
    config = options.config
    svc = KrakenService("origin", config, reactor)
    reactor = svc.reactor
    origin = config.origin
    base = Path(options.opts["config"]).resolve().parent if options.opts.get("config") else Path.cwd()
    backends = BackendRouter.from_config(_resolve_backend_paths(origin.backends, base), reactor)
    backends.routes[:0] = origin_routes(origin.mirrors, reactor)
    cas = CAStore(origin.store)
    journal = open_journal(cas.root / JOURNAL_FILE, reactor, svc.metrics, "kraken-origin")
    blobs = OriginBlobs(
        reactor, cas, backends, parse_thresholds(origin.piece_lengths), svc.metrics,
        writeback_retry=(origin.writeback_retry_first, origin.writeback_retry_cap),
        verify_on_serve=origin.verify_on_serve, journal=journal,
    )
    WriteBackService(blobs.writebacks).setServiceParent(svc)
    egress, ingress = buckets(config.bandwidth, reactor)
    scheduler = Scheduler(
        reactor,
        scheduler_config(for_origin(config.scheduler)),
        dialer=PeerDialer(reactor, svc.tls),
        seed_source=blobs.seed,
        metrics=svc.metrics,
        egress=egress,
        ingress=ingress,
    )
    blobs.scheduler = scheduler
    host = advertised_host(origin.advertise_host, origin.peer_listen)
    http = make_http_client(reactor, svc.tls, {"origin"})
    placement = OriginPlacement(
        origin.cluster, origin.max_replica, host, svc.ports, scheduler.peer_id,
        self_address=origin.self_address,
    )
    corrupt = svc.metrics.counter("corrupt_entries", "unreadable entries found on disk, by store", ["store"])
    replicator = Replicator(placement, cas.blob_path, partial(OriginClient, reactor, tls=svc.tls, http=http),
                            journal, retry=(origin.writeback_retry_first, origin.writeback_retry_cap),
                            legacy_markers=cas.root / "replicate",
                            on_corrupt=corrupt.labels("replication").inc)
    ReplicationService(replicator, reactor).setServiceParent(svc)
    health = ClusterHealth(reactor, placement, http, svc.tls, svc.metrics, origin.health_interval,
                           origin.health_timeout, origin.health_fails, origin.health_passes)
    health.checker.setServiceParent(svc)
    membership = Membership(reactor, placement, cas, replicator)

    svc.on_config_reload(
        options.reread, lambda new: changed(membership.apply(new.origin.cluster, new.origin.max_replica))
    )

    blobs.pending_copy = replicator.holds
    blobs.replicas = lambda d: [
        OriginClient(reactor, a, svc.tls, http)
        for a in healthy_first(placement.other_owners(d), placement.is_healthy)
    ]
    writers = set(origin.write_roles)

    def first_owner(d: Digest) -> bool:
        """Where proxies and the build-index ask about *d* (``/locations``' first): it decides GC."""
        return placement.locations(d)[0] == placement.self_address()

    sweeper = OriginSweeper(blobs, first_owner, lambda: placement.cluster or [placement.self_address()],
                            reactor, svc.metrics)
    api = OriginAPI(
        blobs, placement.locations, placement.self_address, placement.peer_context, writers,
        replicator.replicate, origin.max_upload_size, sweeper,
    )
    site = make_site(
        api.router(), svc.metrics, {"scheduler": scheduler.probe}, body_router=api, http=config.http,
        reactor=reactor, ready_checks={"scheduler": scheduler.probe, "cluster_health": health.ready},
    )
    svc.listen_all("http", config.listen, site, allowed_roles=CLIENT_ROLES)
    svc.listen_all("peer", origin.peer_listen, PeerFactory(scheduler), allowed_roles={"agent", "origin"})
    SchedulerService(scheduler, on_stop=lambda: close_http_client(http)).setServiceParent(svc)
    policy = EvictionPolicy(origin.cache_tti, origin.cache_ttl, origin.disk_high_water, origin.disk_low_water,
                            origin.store_capacity)
    evictor = Evictor(reactor, cas, policy, svc.metrics, busy=blobs.busy, before_delete=blobs.let_go)
    if evictor.enabled:
        TimerService(origin.cleanup_interval, evictor.run).setServiceParent(svc)
    return svc
