"""Durable pipelines through a real twistd process: kill -9 while 10,000 events with
idempotency keys stream in, restart, send them all again; every event then has exactly one
id and one result, none is lost."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tests.integration.pipeline_http import Http, wait_for
from tests.support import ServerProcess

EVENTS = 10_000
BATCH = 250

SERVICE = {
    "name": "later",
    "client": {"module": "lambda", "start": {"module": "tests.integration.pipeline_test_lambdas"}},
    "interface": {"later": {"call": {"function": "later"}}},
}
ORDERS = {
    "name": "orders",
    "durable": {"key": "args['n']"},
    "components": [
        {"name": "price", "type": "stage", "transform": {"price": "args['n'] * 2"}},
        {"name": "wait", "service": {"name": "later", "function": "later"}, "prepare": {"n": "args['n']"},
         "transform": {"later": "args['later']"}, "count": 64},
    ],
}


def cast_all(api: Http, numbers: list[int], ids: dict[int, str], stop: threading.Event | None = None) -> None:
    """Cast in batches; record the id of every acknowledged event (stops at a failure)."""
    for start in range(0, len(numbers), BATCH):
        if stop is not None and stop.is_set():
            return
        batch = numbers[start : start + BATCH]
        try:
            answer = api.post("/pipelines/cast/orders", [{"n": n} for n in batch])
        except OSError:
            return
        if answer.status != 200:
            return
        for n, event_id in zip(batch, answer.json["ok"], strict=True):
            assert ids.setdefault(n, event_id) == event_id, (n, event_id)


def test_kill_9_during_10000_durable_events(servers: ServerProcess.Pool, tmp_path: Path) -> None:
    config = {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "pipeline": {
            "database": str(tmp_path / "db.sqlite3"),
            "lambda_modules": ["tests.integration.pipeline_test_lambdas"],
            "default_timeout": 60.0,
        },
    }
    server = servers.start("kraken-pipeline", config)
    api = Http(server.port("http"))
    api.ok("POST", "/services/define", SERVICE)
    api.ok("POST", "/services/start/later")
    api.ok("POST", "/pipelines/define", ORDERS)
    api.ok("POST", "/pipelines/start/orders")

    acked: dict[int, str] = {}
    numbers = list(range(EVENTS))
    sender = threading.Thread(target=cast_all, args=(api, numbers, acked))
    sender.start()
    wait_for(lambda: len(acked) >= EVENTS // 3, 60, "a third of the events to be acknowledged")
    server.kill()  # SIGKILL: events in flight, some accepted and not yet committed
    sender.join(60)
    assert 0 < len(acked) < EVENTS
    before = dict(acked)

    server.start()
    api = Http(server.port("http"))
    again: dict[int, str] = {}
    cast_all(api, numbers, again)
    assert len(again) == EVENTS
    assert all(again[n] == event_id for n, event_id in before.items())  # the same events, not new ones
    wait_for(lambda: api.ok("GET", "/events/summary/orders")["open"] == 0, 120, "every event to finish")
    assert api.ok("GET", "/events/summary/orders") == {"done": EVENTS, "open": 0, "uncommitted": 0}

    results: dict[str, Any] = {}
    ids = [again[n] for n in numbers]
    assert len(set(ids)) == EVENTS
    for start in range(0, EVENTS, 1000):
        for entry in api.ok("POST", "/events/lookup", {"ids": ids[start : start + 1000]}):
            assert entry["state"] == "done", entry
            results[entry["id"]] = entry["result"]
    for n in numbers:
        assert results[again[n]] == {"n": n, "price": 2 * n, "later": n}, n
    one = api.ok("GET", f"/events/{again[7]}")
    assert one["key"] == "7" and one["result"]["later"] == 7
    assert api.ok("GET", "/events/nope") == {"id": "nope", "state": "unknown"}
    assert "journaled events again" in server.log()  # the kill left events in flight
