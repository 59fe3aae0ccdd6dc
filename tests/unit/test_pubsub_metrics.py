"""Prometheus view of the router: values read at scrape time, drops kept after disconnects."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from kraken.pubsub import wire
from kraken.pubsub.metrics import PubSubCollector
from kraken.pubsub.testing import Harness


def test_metrics_follow_the_router() -> None:
    h = Harness(max_queue_messages=2, max_clients=3)
    registry = CollectorRegistry()
    registry.register(PubSubCollector("kraken_pubsub_", h.router, h.factory))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value("kraken_pubsub_" + name, labels)

    sub, pub = h.connect(), h.connect()
    sub.send(b"set subscribe 0 0 3\r\na b\r\n")
    for i in range(5):
        pub.send(wire.set_command(b"publish", wire.record([b"a"], b"%d" % i)))
    h.connect().send(b"get messages\r\n")
    h.connect().close()  # the fourth is refused
    assert value("connections", kind="memcached") == 3
    assert value("topics") == 2 and value("subscriptions") == 2
    assert value("queue_depth", kind="memcached") == 2
    assert value("messages_in_total") == 5 and value("messages_out_total") == 5
    assert value("queue_dropped_total") == 3
    assert value("rejected_connections_total") == 1
    assert value("retained_messages") == 5
    sub.close()
    assert value("queue_dropped_total") == 3
    assert value("connections", kind="memcached") == 2
    pub.send(b"bogus\r\n")
    assert value("malformed_closes_total") == 1
