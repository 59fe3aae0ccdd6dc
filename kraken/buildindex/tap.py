"""``twistd -n kraken-build-index --config etc/build-index.yaml``: the tag server."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.backends.base import make_backend
from kraken.buildindex.api import BuildIndexAPI
from kraken.buildindex.duplicate import Duplicator, HTTPTagSender
from kraken.buildindex.gc import Collector
from kraken.buildindex.referrers import HTTPReferrerSender, ReferrersAPI
from kraken.buildindex.replicate import Replicator
from kraken.buildindex.tags import TagService
from kraken.core.config import ConfigPath, KrakenOptions, ServerConfig, listen_setting, section, setting
from kraken.core.http import make_site
from kraken.core.httpclient import make_http_client
from kraken.core.journal import JOURNAL_FILE, open_journal
from kraken.core.reactor import IServerReactor
from kraken.core.service import KrakenService
from kraken.mirror.wiring import build_index_mirror
from kraken.p2p.origins import OriginCluster
from kraken.registry.policy import PolicyConfigError, TagRules
from kraken.registry.referrerstore import ReferrerStore
from kraken.registry.tagstore import TagStore

log = Logger(namespace="kraken.buildindex")


@dataclass(frozen=True, kw_only=True)
class BuildIndexSection:
    storage: ConfigPath = setting("build-index-data", "directory holding the tags")
    origins: list[str] = setting([], "origin host:port list for dependency checks; empty skips them")
    backend: dict[str, Any] = setting({}, "backend tags are written through to and read from ({type: ...})")
    cluster: list[str] = setting([], "other build-indexes (host:port); stored tags are copied there")
    remotes: dict[str, Any] = setting(
        {}, "remote build-index host:port -> [repo:tag regexes] replicated there"
    )
    mirrors: dict[str, Any] = setting({}, "registry host -> upstream {url, credentials, tag_ttl} (mirroring)")
    origin: str | None = setting(None, "origin address other clusters replicate to (default: origins[0])")
    retry_first: float = setting(0.5, "seconds to the first retry of a tag copy or replication", minimum=0)
    retry_cap: float = setting(60.0, "longest wait between retries (they never give up)", minimum=0.01)
    replica_delay: float = setting(
        10.0, "seconds before a neighbour's tag copy is replicated to remotes by this one too", minimum=0
    )
    allowed_roles: list[str] = setting(
        ["proxy", "agent", "build-index", "client"], "certificate roles admitted on tls:"
    )
    immutable_tags: list[dict[str, Any]] = setting(
        [], "[{repository: REGEX, tags: REGEX}]: existing matching tags cannot be moved or removed"
    )
    retention: list[dict[str, Any]] = setting(
        [], "[{repository: REGEX, keep_last: N, keep_newer_than: 7d, keep_tags: REGEX}], first match wins"
    )
    retention_interval: float = setting(3600.0, "seconds between retention runs (0: only POST /retention)",
                                        minimum=0)
    gc_grace: float = setting(3600.0, "seconds a blob written or asked about is spared by garbage collection",
                              minimum=0)


@dataclass(frozen=True, kw_only=True)
class BuildIndexConfig(ServerConfig):
    listen: list[str] = listen_setting(["tls:tcp:15004:interface=127.0.0.1"])
    buildindex: BuildIndexSection = section(BuildIndexSection)


class Options(KrakenOptions[BuildIndexConfig]):
    tapname = "kraken-build-index"


CONFIG_ERROR = "kraken-build-index: config error: buildindex"


def _remotes(remotes: dict[str, Any]) -> dict[str, list[str]]:
    out = {}
    for remote, patterns in remotes.items():
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise SystemExit(f"{CONFIG_ERROR}.remotes.{remote}: expected a list of regular expressions")
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as e:
                raise SystemExit(f"{CONFIG_ERROR}.remotes.{remote}: {e}") from None
        out[str(remote)] = patterns
    return out


def _run_retention(api: BuildIndexAPI, clock: IReactorTime) -> Deferred[Any]:
    def done(expired: list[str]) -> None:
        api.expired.inc(len(expired))
        if expired:
            log.info("retention removed {n} tags: {tags}", n=len(expired), tags=", ".join(expired[:20]))

    def failed(f: Failure) -> None:
        log.failure("retention run failed", f)

    d: Deferred[Any] = api.tags.apply_retention(clock.seconds())
    return d.addCallbacks(done, failed)


class _StopDuplicator(Service):
    """Resumes the copies left pending on disk at start; stops retrying at shutdown."""

    def __init__(self, duplicator: Duplicator | Replicator) -> None:
        self.duplicator = duplicator

    def startService(self) -> None:
        super().startService()
        self.duplicator.resume()

    def stopService(self) -> Any:
        self.duplicator.stop()
        return super().stopService()


def makeService(options: Options, reactor: IServerReactor | None = None) -> KrakenService:
    config = options.config
    svc = KrakenService("build-index", config, reactor)
    index = config.buildindex
    root = Path(index.storage)
    origins = OriginCluster(svc.reactor, index.origins, svc.tls) if index.origins else None
    if origins is not None:  # SIGHUP: a new buildindex.origins list
        svc.on_config_reload(options.reread,
                             lambda new: origins.set_members(new.buildindex.origins or origins.members))
    backend = make_backend(index.backend, svc.reactor) if index.backend else None
    duplicator = None
    journal = open_journal(root / JOURNAL_FILE, svc.reactor, svc.metrics, "kraken-build-index")
    corrupt_entries = svc.metrics.counter("corrupt_entries", "unreadable entries found on disk, by store",
                                          ["store"])

    def corrupt(store: str) -> Callable[[], None]:
        return corrupt_entries.labels(store).inc
    if index.cluster:
        send = HTTPTagSender(make_http_client(svc.reactor, svc.tls, {"build-index"}), svc.tls)
        outcomes = svc.metrics.counter("tag_copies", "tag copies sent to neighbours", ["outcome"])
        duplicator = Duplicator(index.cluster, send, journal, first_delay=index.retry_first,
                                max_delay=index.retry_cap,
                                on_result=lambda outcome: outcomes.labels(outcome).inc(),
                                legacy_markers=root / "pending" / "duplicate",
                                on_corrupt=corrupt("tag_copies"))
        _StopDuplicator(duplicator).setServiceParent(svc)
    try:
        rules = TagRules.from_config(index.immutable_tags, index.retention, "buildindex")
    except PolicyConfigError as e:
        raise SystemExit(f"kraken-build-index: config error: {e}") from None
    tag_store = TagStore(root / "tags", svc.metrics)
    tags = TagService(tag_store, root / "tmp", origins, backend, duplicator, rules)
    tags.mirror = build_index_mirror(index.mirrors, tag_store, root / "tmp", svc.reactor, origins,
                                     svc.metrics)
    if index.remotes:
        if origins is None:
            raise SystemExit(f"{CONFIG_ERROR}.remotes needs buildindex.origins")
        replicated = svc.metrics.counter("tag_replications", "replications to other clusters", ["outcome"])
        replicator = Replicator(
            _remotes(index.remotes), tags, make_http_client(svc.reactor, svc.tls, {"build-index"}), svc.tls,
            svc.reactor, root / "tmp", journal, on_result=lambda outcome: replicated.labels(outcome).inc(),
            legacy_markers=root / "pending" / "replicate", on_corrupt=corrupt("tag_replications"),
            retry=(index.retry_first, index.retry_cap),
        )
        tags.replicator = replicator
        tags.replica_delay = index.replica_delay
        _StopDuplicator(replicator).setServiceParent(svc)
    origin = index.origin or (index.origins[0] if index.origins else None)
    collector = Collector(tags, origins, root / "tmp", svc.reactor, svc.metrics) if origins else None
    api = BuildIndexAPI(tags, svc.metrics, origin, svc.reactor, collector, index.gc_grace)
    referrer_copies = None
    if index.cluster:
        send_referrer = HTTPReferrerSender(make_http_client(svc.reactor, svc.tls, {"build-index"}), svc.tls)
        copied = svc.metrics.counter("referrer_copies", "referrer changes sent to neighbours", ["outcome"])
        referrer_copies = Duplicator(index.cluster, send_referrer, journal, "referrer_copies",
                                     first_delay=index.retry_first, max_delay=index.retry_cap,
                                     on_result=lambda outcome: copied.labels(outcome).inc(),
                                     legacy_markers=root / "pending" / "referrers",
                                     on_corrupt=corrupt("referrer_copies"))
        _StopDuplicator(referrer_copies).setServiceParent(svc)
    referrers = ReferrersAPI(ReferrerStore(root / "referrers"), svc.metrics, referrer_copies)
    referrers.register(api.router)
    if collector is not None:
        collector.referrers = referrers  # a live manifest keeps its referrers; dead ones leave the index
    if rules.retention and index.retention_interval > 0:
        retention = TimerService(index.retention_interval, _run_retention, api, svc.reactor)
        retention.clock = svc.reactor
        retention.setServiceParent(svc)
    site = make_site(
        api.router, svc.metrics, {"storage": lambda: root.is_dir()}, http=config.http, reactor=svc.reactor
    )
    svc.listen_all("http", config.listen, site, allowed_roles=index.allowed_roles)
    return svc
