"""The loopback admin HTTP API behind ``kraken pubsub``: status, topics, queues, log level."""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from kraken.core.http import HTTPError, Router, read_json
from kraken.core.logging import LEVELS, LogControl
from kraken.pubsub.cluster import Cluster
from kraken.pubsub.router import Router as PubSubRouter
from kraken.pubsub.upstream import UpstreamLink


def text(value: bytes) -> str:
    """Topic names are bytes; JSON shows them as UTF-8 (undecodable bytes escaped)."""
    return value.decode("utf-8", "backslashreplace")


class Admin:
    def __init__(
        self,
        router: PubSubRouter,
        log_control: LogControl,
        shards: int,
        upstream: UpstreamLink | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        self.router = router
        self.upstream = upstream
        self.cluster = cluster
        self.log_control = log_control
        self.shards = shards

    def routes(self) -> Router:
        r = Router()
        r.route("GET", "/status", self.status)
        r.route("GET", "/topics", self.topics)
        r.route("GET", "/queues", self.queues)
        r.route("GET", "/queues/{conn:[0-9]+}/topics", self.queue_topics)
        r.route(("PUT", "POST"), "/log-level", self.set_log_level)
        return r

    def status(self, request: Request) -> dict[str, Any]:
        router = self.router
        now = router.now()
        s = router.stats
        return {
            "status": "running",
            "uptime": now - router.started,
            "connections": len(router.clients),
            "topics": len(router.subscribers),
            "subscriptions": router.subscription_count(),
            "patterns": len(router.patterns),
            "pattern_subscriptions": router.pattern_subscriptions,
            "shards": self.shards,
            "retained": [len(r) for r in router.retained],
            "publishes": s.publishes,
            "messages_in": s.published,
            "messages_out": s.delivered,
            "messages_replayed": s.replayed,
            "log_level": self.log_control.level,
            "role": self.role(),
            "upstream": self.upstream.status() if self.upstream is not None else None,
            "cluster": self.cluster.status() if self.cluster is not None else None,
        }

    def role(self) -> str:
        if self.upstream is not None:
            return "proxy"
        return "cluster" if self.cluster is not None else "node"

    def topics(self, request: Request) -> dict[str, Any]:
        return {"topics": [{"topic": text(t), "subscribers": n} for t, n in self.router.topic_counts()]}

    def queues(self, request: Request) -> dict[str, Any]:
        now = self.router.now()
        return {"queues": [c.describe(now) for c in self.router.clients.values()]}

    def queue_topics(self, request: Request, conn: str) -> dict[str, Any]:
        client = self.router.clients.get(int(conn))
        if client is None:
            raise HTTPError(404, "NO_SUCH_CONNECTION", f"no connection {conn}")
        return {
            "id": client.id,
            "name": client.name,
            "topics": [text(t) for t in client.topics],
            "patterns": [text(p) for p in client.patterns],
        }

    def set_log_level(self, request: Request) -> dict[str, Any]:
        body = read_json(request)
        level = body.get("level") if isinstance(body, dict) else None
        if level not in LEVELS:
            raise HTTPError(400, "BAD_LEVEL", f"level must be one of: {', '.join(LEVELS)}")
        self.log_control.set_level(level)
        return {"level": level}
