"""How each server plugs the ``mirrors`` setting in (the agent, the build-index, the origins)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.web.server import Request

from kraken.backends.base import NamespaceRoute, make_backend
from kraken.core.metrics import Metrics
from kraken.core.reactor import IServerReactor
from kraken.mirror.config import MirrorConfigError, mirrored_name, parse_mirrors
from kraken.mirror.tags import BlobSource, MirrorTags
from kraken.registry.tagstore import TagStore


def checked_mirrors(raw: Any, where: str) -> Any:
    try:
        return parse_mirrors(raw, where)
    except MirrorConfigError as e:
        raise SystemExit(f"config error: {e}") from None


def agent_name_mapper(raw: Any) -> Callable[[Request, str], str] | None:
    """Maps ``/v2/<repo>/...?ns=<host>`` to the kraken repository of that mirror (agent side)."""
    upstreams = checked_mirrors(raw, "registry.mirrors")

    def name_for(request: Request, name: str) -> str:
        values = request.args.get(b"ns")
        if not values:
            return name
        return mirrored_name(upstreams, values[0].decode("utf-8", "replace"), name)

    return name_for


def origin_routes(raw: Any, reactor: IServerReactor) -> list[NamespaceRoute]:
    """Backend routes reading each mirrored namespace from its upstream (origin side)."""
    upstreams = checked_mirrors(raw, "origin.mirrors")
    return [NamespaceRoute(re.compile(re.escape(u.prefix)), make_backend(u.backend_config(), reactor))
            for u in upstreams.values()]


def build_index_mirror(raw: Any, store: TagStore, scratch: Path, reactor: IServerReactor,
                       source: BlobSource | None, metrics: Metrics | None = None) -> MirrorTags | None:
    upstreams = checked_mirrors(raw, "buildindex.mirrors")
    if not upstreams:
        return None
    backends = {u.name: make_backend(u.backend_config(), reactor) for u in upstreams.values()}
    return MirrorTags(upstreams, backends, store, scratch, reactor, source, metrics=metrics)
