"""Topics page: the pub/sub admin API (status, topics with subscriber counts, per-connection
queues with depth and drops) and, where the server says, its place in a proxy tree or cluster
(``role``, ``upstream`` and ``cluster`` in ``/status``)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from kraken.dashboard.adapters import NOT_AVAILABLE, each
from kraken.dashboard.sources import Fetcher, Server

MAX_ROWS = 500
UPSTREAM_KEYS = (
    "peer", "connected", "lag", "records_in", "records_out", "dropped_records", "waiting_records",
)


def tree_place(status: dict[str, Any]) -> Any:
    """The server's role, its upstream link and cluster members, from ``/status``; a server
    that does not say has no proxy tree to show."""
    if "role" not in status:
        return NOT_AVAILABLE
    upstream = status.get("upstream")
    cluster = status.get("cluster")
    return {
        "role": status["role"],
        "upstream": {k: upstream.get(k) for k in UPSTREAM_KEYS} if isinstance(upstream, dict) else None,
        "cluster": {
            "self": cluster.get("self"),
            "members": [
                {"node": m.get("node"), "healthy": m.get("healthy"),
                 "shards": len(m.get("owned_shards") or [])}
                for m in cluster.get("members", []) if isinstance(m, dict)
            ],
        } if isinstance(cluster, dict) else None,
    }


class TopicsAdapter:
    def __init__(self, fetcher: Fetcher, servers: list[Server]) -> None:
        self.fetcher = fetcher
        self.servers = servers

    @inlineCallbacks
    def _read(self, server: Server) -> Any:
        status = yield self.fetcher.get_json(server, "/status")
        topics = yield self.fetcher.get_json(server, "/topics")
        queues = yield self.fetcher.get_json(server, "/queues")
        rows = sorted(queues.get("queues", []), key=lambda q: -int(q.get("length", 0)))
        return {
            "status": status,
            "topics": topics.get("topics", [])[:MAX_ROWS],
            "queues": rows[:MAX_ROWS],
            "dropped": sum(int(q.get("dropped", 0)) for q in queues.get("queues", [])),
            "tree": tree_place(status),
        }

    def collect(self) -> Deferred[dict[str, Any]]:
        return each(self.servers, self._read).addCallback(lambda rows: {"servers": rows})
