"""Pipelines page: each pipeline's components and branches (for the diagram), live counts and
mean times per component, and its dead letters where the pipeline server keeps them."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks

from kraken.dashboard.adapters import NOT_AVAILABLE, each, optional
from kraken.dashboard.sources import Fetcher, FetchError, Server

MAX_PIPELINES = 100
# Where a pipeline server lists and replays a pipeline's dead letters (when it keeps them).
DEAD_LETTERS = "/dead_letters?pipeline={name}&limit=50"
REPLAY_ALL = "/dead_letters/replay"  # body {"pipeline": name}
NO_STORE = ":no_dead_letters"  # the answer of a server that has the API but keeps none
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def pipeline_name(text: Any) -> str:
    if not isinstance(text, str) or not _NAME.match(text):
        raise FetchError("a pipeline name is letters, digits, '_', '.', ':' and '-'")
    return text


def error_route(spec: Any) -> dict[str, Any] | None:
    """A pipeline's default ``on_error`` (its definition's form) as ``/pipelines/components``
    gives a component's: ``{kind, target}``, marked ``default``; the components endpoint
    shows only the components' own routes."""
    if spec == "dead_letter" or spec == {"dead_letter": True}:
        return {"kind": "dead_letter", "target": None, "default": True}
    if isinstance(spec, dict) and len(spec) == 1:
        ((kind, target),) = spec.items()
        if kind in ("component", "pipeline") and isinstance(target, str):
            return {"kind": kind, "target": target, "default": True}
    return None


class PipelinesAdapter:
    def __init__(self, fetcher: Fetcher, servers: list[Server]) -> None:
        self.fetcher = fetcher
        self.servers = servers

    @inlineCallbacks
    def _pipeline(self, server: Server, name: str) -> Any:
        q = quote(name, safe="")
        status = yield self.fetcher.get_json(server, f"/pipelines/status/{q}")
        components = yield self.fetcher.get_json(server, f"/pipelines/components/{q}")
        definition = yield optional(self.fetcher.get_json(server, f"/pipelines/definition/{q}"), {})
        default = error_route(definition.get("on_error") if isinstance(definition, dict) else None)
        if default is not None and isinstance(components, list):
            components = [c if not isinstance(c, dict) or c.get("on_error") else {**c, "on_error": default}
                          for c in components]
        ready = status.get("status") == ":ready"
        stats = (yield self.fetcher.get_json(server, f"/pipelines/stats/{q}")) if ready else None
        dead = yield self._dead_letters(server, q)
        return {"name": name, "status": status.get("status"), "components": components, "stats": stats,
                "dead_letters": dead}

    @inlineCallbacks
    def _dead_letters(self, server: Server, quoted: str) -> Any:
        try:
            path = DEAD_LETTERS.format(name=quoted)
            found = yield optional(self.fetcher.get_json(server, path), NOT_AVAILABLE)
        except FetchError as e:
            if NO_STORE in str(e):
                return NOT_AVAILABLE
            raise
        return found if isinstance(found, (list, str)) else NOT_AVAILABLE

    @inlineCallbacks
    def _read(self, server: Server) -> Any:
        names = yield self.fetcher.get_json(server, "/pipelines")
        if not isinstance(names, list):
            raise FetchError("/pipelines did not answer a list")
        found = yield gatherResults([self._pipeline(server, str(n)) for n in names[:MAX_PIPELINES]])
        return {"pipelines": found}

    def collect(self) -> Deferred[dict[str, Any]]:
        return each(self.servers, self._read).addCallback(lambda rows: {"servers": rows})

    def replay(self, index: Any, name: Any) -> Deferred[Any]:
        if not isinstance(index, int) or not 0 <= index < len(self.servers):
            raise FetchError(f"no pipeline server {index!r}")
        body = {"pipeline": pipeline_name(name)}
        return self.fetcher.send_json(self.servers[index], "POST", REPLAY_ALL, body)
