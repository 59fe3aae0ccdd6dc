"""Prometheus view of the router: read at scrape time, so the fan-out path stays free of locks."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from kraken.pubsub.router import Router
from kraken.pubsub.server import MemcachedFactory
from kraken.pubsub.websocket import PushFactory


class PubSubCollector(Collector):
    def __init__(
        self, prefix: str, router: Router, memcached: MemcachedFactory, push: PushFactory | None = None
    ) -> None:
        self.prefix = prefix
        self.router = router
        self.memcached = memcached
        self.push = push

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        p = self.prefix
        router = self.router
        kinds: dict[str, list[int]] = {"memcached": [0, 0, 0], "websocket": [0, 0, 0]}
        dropped = router.stats.dropped_by_closed
        for client in router.clients.values():
            row = kinds.setdefault(client.kind, [0, 0, 0])
            row[0] += 1
            row[1] += client.depth()
            row[2] += client.queued_bytes()
            dropped += client.dropped
        conns = GaugeMetricFamily(p + "connections", "open client connections", labels=["kind"])
        depth = GaugeMetricFamily(p + "queue_depth", "messages waiting in client queues", labels=["kind"])
        qbytes = GaugeMetricFamily(p + "queue_bytes", "bytes waiting in client queues", labels=["kind"])
        for kind, (n, d, b) in sorted(kinds.items()):
            conns.add_metric([kind], n)
            depth.add_metric([kind], d)
            qbytes.add_metric([kind], b)
        yield conns
        yield depth
        yield qbytes
        yield GaugeMetricFamily(p + "topics", "topics with a subscriber", value=len(router.subscribers))
        yield GaugeMetricFamily(p + "subscriptions", "topic subscriptions", value=router.subscription_count())
        yield GaugeMetricFamily(
            p + "pattern_subscriptions", "pattern subscriptions", value=router.pattern_subscriptions
        )
        yield GaugeMetricFamily(
            p + "retained_messages", "records kept for retroactive subscription",
            value=sum(len(r) for r in router.retained),
        )
        s = router.stats
        yield CounterMetricFamily(p + "publishes", "publish commands", value=s.publishes)
        yield CounterMetricFamily(p + "messages_in", "published records", value=s.published)
        yield CounterMetricFamily(p + "messages_out", "records delivered to subscribers", value=s.delivered)
        yield CounterMetricFamily(p + "messages_replayed", "records replayed retroactively", value=s.replayed)
        yield CounterMetricFamily(
            p + "queue_dropped", "records dropped from full queues", value=dropped
        )
        m = self.memcached
        rejected = m.rejected + (self.push.rejected if self.push is not None else 0)
        yield CounterMetricFamily(p + "rejected_connections", "refused: too many clients", value=rejected)
        push = self.push
        yield CounterMetricFamily(
            p + "rejected_per_ip", "connections refused: too many from their address",
            value=m.rejected_per_ip + (push.rejected_per_ip if push is not None else 0),
        )
        yield CounterMetricFamily(
            p + "evicted_connections", "idle connections closed to admit a new one",
            value=m.evicted + (push.evicted if push is not None else 0),
        )
        refused = CounterMetricFamily(
            p + "refused_subscribes", "subscribe commands refused by a subscription limit", labels=["limit"]
        )
        for limit in ("per_command", "per_connection", "server"):
            refused.add_metric([limit], s.refused_subscribes.get(limit, 0))
        yield refused
        yield CounterMetricFamily(p + "malformed_closes", "closed for bad input", value=m.malformed)
        yield CounterMetricFamily(p + "idle_closes", "connections closed for idleness", value=m.idle_closed)
