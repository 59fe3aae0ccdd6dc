"""Pipelines fed by a real kraken-pubsub over mutual TLS: 10,000 messages published while the
pipeline server is killed and restarted midway are each processed once (the retroactive
subscription replays what was missed, a durable pipeline's idempotency key absorbs repeats),
and the results are published to another topic."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from kraken.pubsub import wire
from tests.integration.pipeline_http import Http, wait_for
from tests.integration.test_pubsub_server import pubsub_config
from tests.support import ServerProcess, tls_section

MESSAGES = int(os.environ.get("PD_MESSAGES", "10000"))
BATCH = 100


class Memcached:
    """A blocking kraken-pubsub client on the plain listener (the test's publisher and reader)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.parser = wire.ReplyParser()

    def command(self, data: bytes) -> wire.Reply:
        self.sock.sendall(data)
        while True:
            replies = self.parser.feed(self.sock.recv(1 << 20))
            if replies:
                return replies[0]

    def publish(self, topic: bytes, payloads: list[bytes]) -> None:
        body = wire.publish_body([([topic], p) for p in payloads])
        reply = self.command(wire.set_command(b"publish", body))
        assert reply.kind == "STORED", reply

    def subscribe(self, topic: bytes) -> None:
        assert self.command(wire.set_command(b"subscribe", topic)).kind == "STORED"

    def messages(self) -> list[Any]:
        return [json.loads(payload) for _, payload in self.command(wire.get_command()).records()]


def test_topic_fed_pipeline_survives_a_restart(
    servers: ServerProcess.Pool, pki: Path, tmp_path: Path
) -> None:
    retained = pubsub_config(pki, messages_stored_per_router_shard=4 * MESSAGES)
    pubsub = servers.start("kraken-pubsub", retained, name="pubsub")
    config = {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "pipeline"),
        "pipeline": {
            "database": str(tmp_path / "db.sqlite3"),
            "pubsub_server": f"127.0.0.1:{pubsub.port('memcached-tls')}",
        },
    }
    server = servers.start("kraken-pipeline", config, name="pipeline")
    api = Http(server.port("http"))
    api.ok("POST", "/pipelines/define", {
        "name": "orders",
        "durable": {"key": "args['id']"},
        "components": [{"type": "stage", "transform": {"total": "args['qty'] * 3"}}],
    })
    api.ok("POST", "/pipelines/start/orders")
    trigger = {"name": "orders-in", "type": "pubsub", "topics": ["orders"], "pipeline": "orders",
               "publish_to": "orders.done"}
    assert api.ok("POST", "/triggers/define", trigger) == {"ok": "orders-in"}
    wait_for(lambda: api.ok("GET", "/triggers/status/orders-in")["connected"], 20, "the subscription")
    reader = Memcached(pubsub.port("memcached"))
    reader.subscribe(b"orders.done")

    publisher = Memcached(pubsub.port("memcached"))
    published = [0]

    def publish_all() -> None:
        for first in range(0, MESSAGES, BATCH):
            payloads = [json.dumps({"id": f"m{n}", "qty": n}).encode() for n in range(first, first + BATCH)]
            publisher.publish(b"orders", payloads)
            published[0] = first + BATCH
            time.sleep(0.01)

    started = time.monotonic()
    thread = threading.Thread(target=publish_all)
    thread.start()
    wait_for(lambda: published[0] >= MESSAGES // 3, 60, "a third of the messages")
    server.kill()  # kill -9 midway: messages keep coming while the server is down
    wait_for(lambda: published[0] >= 2 * MESSAGES // 3, 60, "two thirds of the messages")
    server.start()
    api = Http(server.port("http"))
    thread.join(120)
    wait_for(lambda: api.ok("GET", "/events/summary/orders")["done"] >= MESSAGES, 120, "every message")
    elapsed = time.monotonic() - started
    time.sleep(0.5)
    assert api.ok("GET", "/events/summary/orders") == {"done": MESSAGES, "open": 0, "uncommitted": 0}
    metrics = api.get("/metrics").raw.decode()
    assert 'kraken_pipeline_trigger_gaps_total{trigger="orders-in",type="pubsub"} 0.0' in metrics
    status = api.ok("GET", "/triggers/status/orders-in")
    assert status["connected"] and status["gaps"] == 0 and status["received"] > 0

    results: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while len(results) < MESSAGES and time.monotonic() < deadline:
        for result in reader.messages():
            results[result["id"]] = result
    assert len(results) == MESSAGES
    assert all(r["total"] == r["qty"] * 3 for r in results.values())
    print(f"\n{MESSAGES} messages through a restart in {elapsed:.1f} s")
