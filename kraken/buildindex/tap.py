"""``twistd -n kraken-build-index --config etc/build-index.yaml``: the tag server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kraken.backends.base import make_backend
from kraken.buildindex.api import BuildIndexAPI
from kraken.buildindex.tags import TagService
from kraken.core.config import Key, KrakenOptions, common_schema
from kraken.core.http import make_site
from kraken.core.service import KrakenService
from kraken.origin.client import OriginCluster
from kraken.registry.tagstore import TagStore


class Options(KrakenOptions):
    tapname = "kraken-build-index"
    schema = {
        **common_schema(listen=["tls:tcp:15004:interface=127.0.0.1"]),
        "buildindex": {
            "storage": Key("path", "build-index-data", "directory holding the tags"),
            "origins": Key("list", [], "origin host:port list for dependency checks; empty skips them"),
            "backend": Key("dict", {}, "backend tags are written through to and read from ({type: ...})"),
            "allowed_roles": Key(
                "list", ["proxy", "agent", "build-index", "client"], "certificate roles admitted on tls:"
            ),
        },
    }


def makeService(options: Options, reactor: Any = None) -> KrakenService:
    config = options.config
    svc = KrakenService("build-index", config, reactor)
    section = config["buildindex"]
    root = Path(section["storage"])
    origins = OriginCluster(svc.reactor, section["origins"], svc.tls) if section["origins"] else None
    backend = make_backend(section["backend"], svc.reactor) if section["backend"] else None
    tags = TagService(TagStore(root / "tags"), root / "tmp", origins, backend)
    api = BuildIndexAPI(tags, svc.metrics)
    site = make_site(api.router, svc.metrics, {"storage": lambda: root.is_dir()})
    svc.listen_all("http", config["listen"], site, allowed_roles=section["allowed_roles"])
    return svc
