"""Topics page: the pub/sub admin API (status, topics with subscriber counts, per-connection
queues with depth and drops) and, where the server has one, its proxy tree."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from kraken.dashboard.adapters import NOT_AVAILABLE, each, optional
from kraken.dashboard.sources import Fetcher, Server

MAX_ROWS = 500
# Where a pub/sub server describes its place in a proxy tree (when it has one).
TREE = "/tree"


class TopicsAdapter:
    def __init__(self, fetcher: Fetcher, servers: list[Server]) -> None:
        self.fetcher = fetcher
        self.servers = servers

    @inlineCallbacks
    def _read(self, server: Server) -> Any:
        status = yield self.fetcher.get_json(server, "/status")
        topics = yield self.fetcher.get_json(server, "/topics")
        queues = yield self.fetcher.get_json(server, "/queues")
        tree = yield optional(self.fetcher.get_json(server, TREE), NOT_AVAILABLE)
        rows = sorted(queues.get("queues", []), key=lambda q: -int(q.get("length", 0)))
        return {
            "status": status,
            "topics": topics.get("topics", [])[:MAX_ROWS],
            "queues": rows[:MAX_ROWS],
            "dropped": sum(int(q.get("dropped", 0)) for q in queues.get("queues", [])),
            "tree": tree,
        }

    def collect(self) -> Deferred[dict[str, Any]]:
        return each(self.servers, self._read).addCallback(lambda rows: {"servers": rows})
