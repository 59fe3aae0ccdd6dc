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
# Where a pipeline server lists and replays dead letters (when it has them): the one place to
# change when that API settles.
DEAD_LETTERS = "/pipelines/dead_letters/{name}"
REPLAY = "/pipelines/dead_letters/{name}/replay"
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def pipeline_name(text: Any) -> str:
    if not isinstance(text, str) or not _NAME.match(text):
        raise FetchError("a pipeline name is letters, digits, '_', '.', ':' and '-'")
    return text


class PipelinesAdapter:
    def __init__(self, fetcher: Fetcher, servers: list[Server]) -> None:
        self.fetcher = fetcher
        self.servers = servers

    @inlineCallbacks
    def _pipeline(self, server: Server, name: str) -> Any:
        q = quote(name, safe="")
        status = yield self.fetcher.get_json(server, f"/pipelines/status/{q}")
        components = yield self.fetcher.get_json(server, f"/pipelines/components/{q}")
        ready = status.get("status") == ":ready"
        stats = (yield self.fetcher.get_json(server, f"/pipelines/stats/{q}")) if ready else None
        dead = yield optional(self.fetcher.get_json(server, DEAD_LETTERS.format(name=q)), NOT_AVAILABLE)
        return {"name": name, "status": status.get("status"), "components": components, "stats": stats,
                "dead_letters": dead}

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
        path = REPLAY.format(name=quote(pipeline_name(name), safe=""))
        return self.fetcher.send_json(self.servers[index], "POST", path, {})
