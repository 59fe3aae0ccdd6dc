"""``twistd -n kraken-proxy --config etc/proxy.yaml``: the registry users push images to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import Service

from kraken.core.cas import CAStore
from kraken.core.config import Key, KrakenOptions, common_schema
from kraken.core.service import KrakenService
from kraken.p2p.origins import OriginCluster
from kraken.proxy.storage import BuildIndexTags, LocalTags, ProxyStorage
from kraken.registry.api import RegistryResource
from kraken.registry.site import make_registry_site
from kraken.registry.tagclient import TagClient
from kraken.registry.tagstore import TagStore
from kraken.registry.uploads import UploadManager


class Options(KrakenOptions):
    tapname = "kraken-proxy"
    schema = {
        **common_schema(listen=["tcp:15000:interface=127.0.0.1"]),
        "proxy": {
            "storage": Key("path", "proxy-data", "directory for the blob cache and upload sessions"),
            "origins": Key("list", [], "origin host:port list; empty keeps blobs in the local cache"),
            "build_index": Key("str", None, "build-index address (host:port); unset keeps tags locally"),
            "max_blob_size": Key("int", 10 * 1024**3, "largest blob accepted, in bytes", minimum=1),
            "upload_ttl": Key("float", 3600.0, "seconds an idle upload session is kept", minimum=1),
            "sendfile_workers": Key("int", 4, "threads sending blob bodies by sendfile (0: off)", minimum=0),
            "max_uploads": Key("int", 1000, "open upload sessions at most (more: 429)", minimum=1),
            "allowed_roles": Key("list", ["client", "proxy"], "certificate roles admitted on tls: listeners"),
            "cache_tti": Key("float", 0.0, "with origins: drop cached blobs idle this long, s (0 = keep)"),
            "cleanup_interval": Key("float", 600.0, "seconds between cache cleanups", minimum=1),
        },
    }


class _Expiry(Service):
    def __init__(self, uploads: UploadManager) -> None:
        self.uploads = uploads

    def startService(self) -> None:
        super().startService()
        self.uploads.start_expiry(min(60.0, self.uploads.ttl))

    def stopService(self) -> Any:
        self.uploads.stop_expiry()
        return super().stopService()


def makeService(options: Options, reactor: Any = None) -> KrakenService:
    config = options.config
    svc = KrakenService("proxy", config, reactor)
    section = config["proxy"]
    root = Path(section["storage"])
    uploads = UploadManager(root / "uploads", svc.reactor, section["upload_ttl"], section["max_blob_size"],
                            section["max_uploads"])
    if section["build_index"]:
        tags: Any = BuildIndexTags(TagClient(svc.reactor, section["build_index"], svc.tls))
    else:
        tags = LocalTags(TagStore(root / "tags"))
    origins = OriginCluster(svc.reactor, section["origins"], svc.tls) if section["origins"] else None
    storage = ProxyStorage(CAStore(root / "blobs"), tags, origins)
    api = RegistryResource(storage, uploads, svc.metrics, reactor=svc.reactor,
                           sendfile_workers=section["sendfile_workers"])
    svc.metrics.gauge("upload_sessions", "open upload sessions").set_function(lambda: len(uploads.sessions))
    site = make_registry_site(api, svc.metrics, {"storage": lambda: root.is_dir()})
    svc.listen_all("registry", config["listen"], site, allowed_roles=section["allowed_roles"])
    _Expiry(uploads).setServiceParent(svc)
    if origins is not None and section["cache_tti"] > 0:
        cache, idle = storage.cache, section["cache_tti"]
        cleanup = TimerService(section["cleanup_interval"], lambda: cache.cleanup(tti=idle))
        cleanup.setServiceParent(svc)
    return svc
