"""``twistd -n kraken-pubsub --config etc/pubsub.yaml``: the pub/sub server's entry point."""

from __future__ import annotations

from dataclasses import dataclass, replace

from kraken.core.config import ConfigError, KrakenOptions, ServerConfig, listen_setting, section, setting
from kraken.core.endpoints import is_tls
from kraken.core.http import make_site
from kraken.core.reactor import IServerReactor
from kraken.core.service import KrakenService
from kraken.pubsub import wire
from kraken.pubsub.admin import Admin
from kraken.pubsub.cluster import Cluster
from kraken.pubsub.metrics import PubSubCollector
from kraken.pubsub.proxy import ClusterService, UpstreamService, parse_upstream
from kraken.pubsub.router import Router, SubscriptionLimits
from kraken.pubsub.server import Limits, MemcachedFactory
from kraken.pubsub.upstream import UpstreamLink
from kraken.pubsub.websocket import PushFactory
from kraken.pubsub.workers import Plan, WorkerSupervisor

DEFAULT_PORT = 12355


@dataclass(frozen=True, kw_only=True)
class PubSubSection:
    num_router_shards: int = setting(4, "router shards (topic grouping on the wire)", minimum=1)
    max_tcp_clients: int = setting(1000, "concurrent memcached connections", minimum=0)
    max_tcp_clients_per_ip: int = setting(
        250, "concurrent memcached connections from one address (0: no limit)", minimum=0
    )
    idle_timeout: float = setting(3600.0, "close memcached clients silent this long (s; 0: never)", minimum=0)
    first_command_timeout: float = setting(
        30.0, "close memcached clients without a complete command this long (s; 0: never)", minimum=0
    )
    evict_idle_after: float = setting(
        60.0, "when full, a client without a command this long (s) makes room for a new one (0: never)",
        minimum=0,
    )
    max_topics_per_subscribe: int = setting(10_000, "topics one subscribe command may name", minimum=1)
    max_subscriptions_per_connection: int = setting(
        100_000, "subscriptions one connection may hold", minimum=1
    )
    max_subscriptions: int = setting(
        1_000_000, "subscriptions all connections together may hold (~350 bytes each)", minimum=1
    )
    max_patterns_per_connection: int = setting(
        1000, "pattern subscriptions one connection may hold", minimum=1
    )
    max_patterns: int = setting(100_000, "pattern subscriptions all connections together may hold", minimum=1)
    max_pattern_bytes: int = setting(1024, "longest pattern of a psubscribe", minimum=1)
    router_min_fanout_to_warn: int = setting(1000, "warn when a record reaches this many clients", minimum=1)
    router_min_publish_to_topics_to_warn: int = setting(
        1000, "warn when a record names this many topics", minimum=1
    )
    messages_stored_per_router_shard: int = setting(
        10000, "records each shard keeps for retroactive subscription", minimum=0
    )
    max_queue_messages: int = setting(100_000, "per-connection queue limit (records)", minimum=1)
    max_queue_bytes: int = setting(64 * 1024 * 1024, "per-connection queue limit (bytes)", minimum=1)
    max_value_bytes: int = setting(wire.DEFAULT_MAX_VALUE, "largest set data block", minimum=0)
    max_line_bytes: int = setting(wire.DEFAULT_MAX_LINE, "longest command line", minimum=64)
    websocket_listen: list[str] = setting(
        ["tcp:12357:interface=127.0.0.1"], "endpoints for WebSocket push ('tls:' prefix for TLS)"
    )
    max_websocket_clients: int = setting(1000, "concurrent WebSocket push clients", minimum=0)
    websocket_ping_interval: float = setting(
        30.0, "ping WebSocket clients this often (whole seconds; 0: never)", minimum=0
    )
    websocket_ping_timeout: float = setting(
        10.0, "drop a WebSocket client whose answer to a ping takes longer (s)", minimum=1
    )
    upstream: list[str] = setting(
        [], "proxy mode: host:port of upstream nodes' mutual-TLS listeners, tried in order on failure"
    )
    upstream_poll_interval: float = setting(
        0.01, "proxy mode: seconds between polls of the upstream node while it has nothing", minimum=0.001
    )
    upstream_timeout: float = setting(
        10.0, "proxy mode: an upstream that leaves a command unanswered this long is dropped (s)", minimum=0.1
    )
    workers: int = setting(
        1, "processes on this host serving as one (a cluster sharing the reuseport: listeners)", minimum=1
    )
    cluster_self: str = setting("", "cluster mode: this node's entry in cluster_members")
    cluster_members: list[str] = setting(
        [], "cluster mode: host:port of every member's mutual-TLS listener, this node's included"
    )
    cluster_health_interval: float = setting(1.0, "cluster mode: seconds between health checks", minimum=0.05)
    cluster_health_timeout: float = setting(
        3.0, "cluster mode: a peer silent this long loses its shards (s)", minimum=0.1
    )
    admin_listen: list[str] = setting(
        ["tcp:12356:interface=127.0.0.1"], "endpoints of the admin HTTP API (keep it on loopback)"
    )


@dataclass(frozen=True, kw_only=True)
class PubSubConfig(ServerConfig):
    listen: list[str] = listen_setting([f"tcp:{DEFAULT_PORT}:interface=127.0.0.1"])
    pubsub: PubSubSection = section(PubSubSection)


class Options(KrakenOptions[PubSubConfig]):
    tapname = "kraken-pubsub"


class PubSubService(KrakenService):
    """The pub/sub server's root service; ``router`` is its topic router."""

    router: Router


def child_arguments(options: Options) -> list[str]:
    """This process's config file and command-line settings, for the other workers."""
    args = ["--config", options["config"]] if options["config"] else []
    for flag, value in options.opts.items():
        if flag != "config" and value is not None:
            args += [f"--{flag}", str(value)]
    for key, value in options.overrides:
        args += ["--set", f"{key}={value}"]
    return args


def makeService(options: Options, reactor: IServerReactor | None = None) -> PubSubService:
    config = options.config
    plan: Plan | None = None
    if config.pubsub.workers > 1:
        if config.pubsub.upstream or config.pubsub.cluster_members:
            raise ConfigError("pubsub.workers: a proxy or a cluster member runs one process")
        plan = Plan.make(config.pubsub.workers, config.listen, config.pubsub.websocket_listen)
        config = replace(
            config,
            listen=[*config.listen, plan.peer_listener(0)],
            pubsub=replace(config.pubsub, cluster_self=plan.members[0], cluster_members=plan.members),
        )
    svc = PubSubService("pubsub", config, reactor)
    clock = svc.reactor
    cfg = config.pubsub
    if plan is not None:
        if svc.tls is None:
            raise ConfigError("pubsub.workers needs the tls section: the workers talk mutual TLS")
        workers = WorkerSupervisor(svc.reactor, plan, child_arguments(options))
        workers.setName("workers")
        workers.setServiceParent(svc)
    router = Router(
        clock,
        shards=cfg.num_router_shards,
        retained_per_shard=cfg.messages_stored_per_router_shard,
        fanout_to_warn=cfg.router_min_fanout_to_warn,
        topics_to_warn=cfg.router_min_publish_to_topics_to_warn,
        limits=SubscriptionLimits(
            per_command=cfg.max_topics_per_subscribe,
            per_connection=cfg.max_subscriptions_per_connection,
            server=cfg.max_subscriptions,
            patterns_per_connection=cfg.max_patterns_per_connection,
            patterns=cfg.max_patterns,
            pattern_bytes=cfg.max_pattern_bytes,
        ),
    )
    limits = Limits(
        max_clients=cfg.max_tcp_clients,
        max_clients_per_ip=cfg.max_tcp_clients_per_ip,
        idle_timeout=cfg.idle_timeout,
        first_command_timeout=cfg.first_command_timeout,
        evict_idle_after=cfg.evict_idle_after,
        max_queue_messages=cfg.max_queue_messages,
        max_queue_bytes=cfg.max_queue_bytes,
        max_line=cfg.max_line_bytes,
        max_value=cfg.max_value_bytes,
    )
    memcached = MemcachedFactory(router, clock, limits)
    for description in config.listen:
        svc.listen("memcached-tls" if is_tls(description) else "memcached", description, memcached)
    push = PushFactory(
        router,
        clock,
        cfg.max_queue_bytes,
        cfg.max_value_bytes + 1024,
        max_clients=cfg.max_websocket_clients,
        max_clients_per_ip=cfg.max_tcp_clients_per_ip,
        ping_interval=cfg.websocket_ping_interval,
        ping_timeout=cfg.websocket_ping_timeout,
    )
    svc.listen_all("websocket", cfg.websocket_listen, push)
    svc.metrics.registry.register(PubSubCollector(svc.metrics.prefix, router, memcached, push))
    link: UpstreamLink | None = None
    cluster: Cluster | None = None
    health = {"router": lambda: True}
    if cfg.upstream and cfg.cluster_members:
        raise ConfigError("pubsub: a node is a proxy (upstream) or in a cluster (cluster_members), not both")
    if cfg.cluster_members:
        parse_upstream(cfg.cluster_members, "cluster_members")
        if cfg.cluster_self not in cfg.cluster_members:
            raise ConfigError(f"pubsub.cluster_self: {cfg.cluster_self!r} is not one of cluster_members")
        cluster = Cluster(
            router, clock, cfg.cluster_self, cfg.cluster_members, cfg.upstream_poll_interval,
            cfg.max_queue_bytes, cfg.cluster_health_timeout,
        )
        router.upstream = cluster
        links = ClusterService(cluster, svc.tls, clock, cfg.cluster_health_interval)
        links.setName("cluster")
        links.setServiceParent(svc)
    if cfg.upstream:
        link = UpstreamLink(router, clock, cfg.upstream_poll_interval, cfg.max_queue_bytes)
        router.upstream = link
        upstream = UpstreamService(
            link, parse_upstream(cfg.upstream), svc.tls, clock, timeout=cfg.upstream_timeout
        )
        upstream.setName("upstream")
        upstream.setServiceParent(svc)
        health["upstream"] = lambda: link is not None and link.connected
    admin = Admin(router, svc.log_control, cfg.num_router_shards, link, cluster)
    site = make_site(
        admin.routes(), svc.metrics, health_checks=health, http=config.http, reactor=svc.reactor,
    )
    svc.listen_all("admin", cfg.admin_listen, site)
    svc.router = router
    return svc
