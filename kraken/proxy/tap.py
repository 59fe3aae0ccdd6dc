"""``twistd -n kraken-proxy --config etc/proxy.yaml``: the registry users push images to."""

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
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.core.cas import CAStore
from kraken.core.config import ConfigPath, KrakenOptions, ServerConfig, listen_setting, section, setting
from kraken.core.reactor import IServerReactor
from kraken.core.service import KrakenService
from kraken.core.verify import BlobVerifier
from kraken.mirror.preheat import PreheatAPI, preheat_router
from kraken.mirror.warm import Warmer
from kraken.mirror.wiring import checked_mirrors
from kraken.p2p.origins import OriginCluster
from kraken.proxy.storage import BuildIndexTags, LocalTags, ProxyStorage
from kraken.registry.api import RegistryResource
from kraken.registry.auth import AuthSection, make_authenticator
from kraken.registry.policy import PolicyConfigError, TagRules
from kraken.registry.referrerclient import ReferrerClient
from kraken.registry.referrers import ReferrerIndex
from kraken.registry.referrerstore import LocalReferrers, ReferrerStore
from kraken.registry.site import make_registry_site
from kraken.registry.tagclient import TagClient
from kraken.registry.tagstore import TagStore
from kraken.registry.uploads import UploadManager

log = Logger(namespace="kraken.proxy")


@dataclass(frozen=True, kw_only=True)
class ProxySection:
    storage: ConfigPath = setting("proxy-data", "directory for the blob cache and upload sessions")
    origins: list[str] = setting([], "origin host:port list; empty keeps blobs in the local cache")
    build_index: str | None = setting(None, "build-index address (host:port); unset keeps tags locally")
    max_blob_size: int = setting(10 * 1024**3, "largest blob accepted, in bytes", minimum=1)
    upload_ttl: float = setting(300.0, "seconds an idle upload session lives (PATCH restarts it)", minimum=1)
    sendfile_workers: int = setting(4, "threads sending blob bodies by sendfile (0: off)", minimum=0)
    max_uploads: int = setting(1000, "open upload sessions at most (more: 429)", minimum=1)
    max_uploads_per_client: int = setting(100, "open upload sessions of one client (more: 429)", minimum=1)
    upload_sync: bool = setting(True, "sync each acknowledged PATCH to disk (false: a power cut may lose it)")
    allowed_roles: list[str] = setting(["client", "proxy"], "certificate roles admitted on tls: listeners")
    cache_tti: float = setting(0.0, "with origins: drop cached blobs idle this long, s (0 = keep)")
    cleanup_interval: float = setting(600.0, "seconds between cache cleanups", minimum=1)
    verify_on_serve: bool = setting(True, "re-hash blobs changed since last checked, before serving")
    mirrors: dict[str, Any] = setting({}, "registry host -> upstream: preheat/prefetch of mirrored images")
    prefetch_min_blob_size: int = setting(0, "prefetch skips blobs smaller than this, bytes", minimum=0)
    prefetch_max_blob_size: int = setting(50 * 1024**3, "prefetch skips blobs larger than this, bytes",
                                          minimum=0)
    read_only: bool = setting(False, "refuse pushes and deletes (405 UNSUPPORTED): a pull-only mirror")
    immutable_tags: list[dict[str, Any]] = setting(
        [], "without a build-index: [{repository: REGEX, tags: REGEX}], tags that cannot move"
    )
    retention: list[dict[str, Any]] = setting(
        [], "without a build-index: [{repository: REGEX, keep_last: N, keep_newer_than: 7d, keep_tags: RE}]"
    )
    retention_interval: float = setting(3600.0, "seconds between retention runs (0: never)", minimum=0)


@dataclass(frozen=True, kw_only=True)
class ProxyConfig(ServerConfig):
    listen: list[str] = listen_setting(["tcp:15000:interface=127.0.0.1"])
    proxy: ProxySection = section(ProxySection)
    auth: AuthSection = section(AuthSection)


class Options(KrakenOptions[ProxyConfig]):
    tapname = "kraken-proxy"


class _Expiry(Service):
    def __init__(self, uploads: UploadManager) -> None:
        self.uploads = uploads

    def startService(self) -> None:
        super().startService()
        self.uploads.start_expiry(max(0.5, min(60.0, self.uploads.ttl / 2)))

    def stopService(self) -> Any:
        self.uploads.stop_expiry()
        return super().stopService()


def _run_retention(tags: LocalTags, clock: IReactorTime, count: Callable[[int], None]) -> Deferred[Any]:
    def done(expired: list[str]) -> None:
        count(len(expired))
        if expired:
            log.info("retention removed {n} tags: {tags}", n=len(expired), tags=", ".join(expired[:20]))

    def failed(f: Failure) -> None:
        log.failure("retention run failed", f)

    return tags.apply_retention(clock.seconds()).addCallbacks(done, failed)


def _open_to_the_network(endpoint: str) -> bool:
    """A plain TCP listener reachable beyond this machine (no loopback ``interface=``)."""
    if not endpoint.startswith(("tcp:", "tcp6:")):
        return False
    found = re.search(r"interface=((?:\\.|[^:])*)", endpoint)
    interface = found.group(1).replace("\\:", ":") if found else ""
    return interface not in ("127.0.0.1", "localhost", "::1") and not interface.startswith("127.")


def makeService(options: Options, reactor: IServerReactor | None = None) -> KrakenService:
    config = options.config
    svc = KrakenService("proxy", config, reactor)
    proxy = config.proxy
    root = Path(proxy.storage)
    uploads = UploadManager(
        root / "uploads", svc.reactor, proxy.upload_ttl, proxy.max_blob_size, proxy.max_uploads,
        proxy.max_uploads_per_client, metrics=svc.metrics, sync=proxy.upload_sync,
        run_blocking=lambda work: deferToThreadPool(svc.reactor, svc.reactor.getThreadPool(), work),
    )
    try:
        rules = TagRules.from_config(proxy.immutable_tags, proxy.retention, "proxy")
    except PolicyConfigError as e:
        raise SystemExit(f"kraken-proxy: config error: {e}") from None
    local: LocalTags | None = None
    referrers: ReferrerIndex
    if proxy.build_index:
        if rules.immutable or rules.retention:
            raise SystemExit("kraken-proxy: config error: proxy.immutable_tags and proxy.retention apply "
                             "to tags kept by the proxy; with proxy.build_index set, configure them in "
                             "the build-index (buildindex.immutable_tags, buildindex.retention)")
        client = TagClient(svc.reactor, proxy.build_index, svc.tls)
        tags: Any = BuildIndexTags(client)
        referrers = ReferrerClient(svc.reactor, proxy.build_index, svc.tls, client.http)
    else:
        tags = local = LocalTags(TagStore(root / "tags", svc.metrics), rules)
        referrers = LocalReferrers(ReferrerStore(root / "referrers"))
    origins = OriginCluster(svc.reactor, proxy.origins, svc.tls) if proxy.origins else None
    if origins is not None:  # SIGHUP: a new proxy.origins list
        svc.on_config_reload(options.reread,
                             lambda new: origins.set_members(new.proxy.origins or origins.members))
    cache = CAStore(root / "blobs")
    verifier = BlobVerifier(svc.reactor, cache, svc.metrics, proxy.verify_on_serve)
    storage = ProxyStorage(cache, tags, origins, verifier)
    auth = make_authenticator(config.auth, svc.reactor, svc.metrics, "kraken-proxy")
    api = RegistryResource(storage, None if proxy.read_only else uploads, svc.metrics,
                           read_only_hint="this proxy is configured read-only (proxy.read_only)",
                           reactor=svc.reactor, sendfile_workers=proxy.sendfile_workers, referrers=referrers,
                           auth=auth)
    svc.metrics.gauge("upload_sessions", "open upload sessions").set_function(lambda: len(uploads.sessions))
    warmer = Warmer(origins, svc.reactor, root / "tmp") if origins is not None else None
    preheat = PreheatAPI(warmer, tags, checked_mirrors(proxy.mirrors, "proxy.mirrors"), svc.metrics,
                         proxy.prefetch_min_blob_size, proxy.prefetch_max_blob_size)
    site = make_registry_site(
        api, svc.metrics, {"storage": lambda: root.is_dir()}, http=config.http, reactor=svc.reactor,
        routes=preheat_router(preheat, auth),
    )
    svc.listen_all("registry", config.listen, site, allowed_roles=proxy.allowed_roles)
    if config.auth.mode == "none":
        for endpoint in filter(_open_to_the_network, config.listen):
            log.warn("{endpoint}: anyone who can reach this port may push, move and delete images "
                     "(auth.mode is none); see docs/registry.md, \"Login and rights\"", endpoint=endpoint)
    _Expiry(uploads).setServiceParent(svc)
    if local is not None and rules.retention and proxy.retention_interval > 0:
        expired = svc.metrics.counter("tags_expired", "tags removed by retention rules")
        retention = TimerService(proxy.retention_interval, _run_retention, local, svc.reactor, expired.inc)
        retention.clock = svc.reactor
        retention.setServiceParent(svc)
    if origins is not None and proxy.cache_tti > 0:
        idle = proxy.cache_tti
        cleanup = TimerService(proxy.cleanup_interval, lambda: cache.cleanup(tti=idle))
        cleanup.setServiceParent(svc)
    return svc
