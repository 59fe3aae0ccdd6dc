"""on_error and the dead-letter store through a real twistd process and a real (breakable)
HTTP stub service: failures routed per component, dead letters listed, kept across a
restart, replayed to success with ``kraken pipeline dlq`` once the service is fixed."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.pipeline_http import Http, run_flaky_stub
from tests.support import REPO, ServerProcess, _env

TOKEN = "dlq-test-token"


@pytest.fixture
def flaky(tmp_path: Path) -> Iterator[int]:
    yield from run_flaky_stub(tmp_path, TOKEN)


def kraken(port: int, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "kraken.cli", "pipeline", "--url", f"http://127.0.0.1:{port}", *args],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=_env(),
    )
    return done.returncode, json.loads(done.stdout or done.stderr)


def stub(port: int, path: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"", method="POST"))


def test_failures_routed_dead_lettered_and_replayed(
    servers: ServerProcess.Pool, tmp_path: Path, flaky: int
) -> None:
    config = {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "pipeline": {"database": str(tmp_path / "db.sqlite3"), "outbound_allow": [f"127.0.0.1:{flaky}"]},
    }
    server = servers.start("kraken-pipeline", config)
    api = Http(server.port("http"))
    api.ok("POST", "/services/define", {
        "name": "flaky",
        "client": {"module": "http", "start": {
            "base_url": f"http://127.0.0.1:{flaky}", "headers": {"Authorization": f"Bearer {TOKEN}"}}},
        "interface": {"work": {
            "prepare": {"method": "POST", "path": "/work", "body": {"n": "args['n']"}},
            "call": {"parse_json_body": True},
            "transform": {"done": "args['body']['done']"},
            "output": {"done": {"type": "integer"}, "required": ["done"]},
        }},
    })
    api.ok("POST", "/services/start/flaky")
    api.ok("POST", "/pipelines/define", {
        "name": "audit",
        "components": [{"type": "stage", "transform": {"audited": "args['error']['component']"}}],
    })
    api.ok("POST", "/pipelines/start/audit")
    api.ok("POST", "/pipelines/define", {
        "name": "orders",
        "on_error": "dead_letter",
        "components": [
            {"name": "check", "type": "switch", "condition": "args['kind']",
             "branches": {"order": [], "audit": []}, "on_error": {"pipeline": "audit"}},
            {"name": "price", "type": "stage", "transform": {"price": "args['qty'] * 2"},
             "on_error": {"component": "priced"}},
            {"name": "priced", "type": "goto-point"},
            {"name": "work", "service": {"name": "flaky", "function": "work"},
             "transform": {"done": "args['done']"}, "retry": {"count": 1, "backoff_ms": 10}},
        ],
    })
    api.ok("POST", "/pipelines/start/orders")
    drawn = {c["name"]: c.get("on_error") for c in api.ok("GET", "/pipelines/components/orders")}
    assert drawn["check"] == {"kind": "pipeline", "target": "audit"} and drawn["work"] is None
    assert drawn["price"] == {"kind": "component", "target": "priced"}
    assert api.ok("POST", "/pipelines/call/orders", {"kind": "order", "qty": 2, "n": 1}) == {
        "kind": "order", "qty": 2, "n": 1, "price": 4, "done": 1,
    }
    # the switch's failure goes to another pipeline, the stage's to a component
    assert api.ok("POST", "/pipelines/call/orders", {"kind": "refund", "n": 2})["audited"] == "check"
    priced = api.ok("POST", "/pipelines/call/orders", {"kind": "order", "qty": "x", "n": 3})
    assert priced["done"] == 3 and priced["error"]["component"] == "price"

    stub(flaky, "/_break")  # the stage without its own on_error uses the pipeline's: dead letters
    events = [{"kind": "order", "qty": i, "n": 10 + i} for i in range(5)]
    failed = api.ok("POST", "/pipelines/call/orders", events)
    assert [f["type"] for f in failed] == ["error_ip"] * 5
    ids = sorted(f["dead_letter"] for f in failed)
    listed = api.ok("GET", "/dead_letters?pipeline=orders")
    assert [e["id"] for e in listed] == ids and {e["component"] for e in listed} == {"work"}
    assert api.ok("GET", f"/dead_letters?pipeline=orders&after={ids[1]}&limit=2") == listed[2:4]
    entry = api.ok("GET", f"/dead_letters/entry/{ids[0]}")
    assert entry["trail"] == ["check", "price", "priced", "work"]
    assert entry["input"]["kind"] == "order" and "price" in entry["event"]
    assert "Expected Integer but got Null" in entry["error"]["message"]

    metrics = api.get("/metrics").raw.decode()
    assert "kraken_pipeline_dead_letters 5.0" in metrics, metrics[-2000:]
    server.stop()  # dead letters are durable
    server.start()
    api = Http(server.port("http"))
    code, refused = kraken(server.port("http"), "dlq", "replay", str(ids[0]))
    assert code == 1 and refused["error"] == ":replay_failed"
    ids[0] = refused["details"]["dead_letter"]
    assert refused["details"]["attempts"] == 1

    stub(flaky, "/_fix")
    code, replayed = kraken(server.port("http"), "dlq", "replay", str(ids[0]))
    assert code == 0 and replayed["ok"]["done"] == 10
    code, show = kraken(server.port("http"), "dlq", "show", str(ids[1]))
    assert code == 0 and show["id"] == ids[1]
    code, deleted = kraken(server.port("http"), "dlq", "delete", str(ids[1]))
    assert (code, deleted) == (0, {"ok": "ok"})
    code, rest = kraken(server.port("http"), "dlq", "replay", "--all", "--from", "start", "--pipeline=orders")
    assert code == 0 and rest == {"ok": {"replayed": 3, "failed": []}}
    code, listed = kraken(server.port("http"), "dlq", "list")
    assert (code, listed) == (0, [])
    assert api.get("/dead_letters/entry/999").json == {"error": ":not_found", "details": {"dead_letter": 999}}
    assert api.post("/dead_letters/replay/1", {"from": "middle"}).status == 400
