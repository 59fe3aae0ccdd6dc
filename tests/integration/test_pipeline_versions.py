"""Pipeline versions through a real twistd process: v2 runs beside v1, the route switches
under load with no event seeing both, rollback, diff, and history in SQLite and the project
folder across a restart."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.pipeline_http import Http, run_flaky_stub
from tests.support import REPO, ServerProcess, _env

TOKEN = "versions-token"


@pytest.fixture
def flaky(tmp_path: Path) -> Iterator[int]:
    yield from run_flaky_stub(tmp_path, TOKEN)


def orders(tag: str) -> dict[str, Any]:
    """Two stages around an HTTP call (events wait there, in flight, during a switch)."""
    return {
        "name": "orders",
        "components": [
            {"name": "before", "type": "stage", "transform": {"before": tag}},
            {
                "name": "work",
                "service": {"name": "flaky", "function": "work"},
                "transform": {"done": "args['done']"},
            },
            {"name": "after", "type": "stage", "transform": {"after": tag}},
        ],
    }


def test_switch_under_load_rollback_diff_and_history(
    servers: ServerProcess.Pool, tmp_path: Path, flaky: int
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    config = {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "pipeline": {
            "database": str(tmp_path / "db.sqlite3"),
            "project_dir": str(project),
            "project_history": True,
            "outbound_allow": [f"127.0.0.1:{flaky}"],
        },
    }
    server = servers.start("kraken-pipeline", config)
    api = Http(server.port("http"))
    api.ok("POST", "/services/define", {
        "name": "flaky",
        "client": {"module": "http", "start": {
            "base_url": f"http://127.0.0.1:{flaky}", "headers": {"Authorization": f"Bearer {TOKEN}"}}},
        "interface": {"work": {
            "prepare": {"method": "POST", "path": "/work", "body": {"n": "args['n']"}},
            "call": {"parse_json_body": True}, "transform": {"done": "args['body']['done']"},
        }},
    })
    api.ok("POST", "/services/start/flaky")
    assert api.ok("POST", "/pipelines/define", orders("v1")) == {"ok": "orders"}
    api.ok("POST", "/pipelines/start/orders")
    api.ok("POST", "/routes/define", {"order": "orders"})
    assert api.ok("POST", "/pipelines/define_version", orders("v2")) == {"ok": "orders", "version": 2}
    listed = api.ok("GET", "/pipelines/versions/orders")
    assert [(v["version"], v["live"], v["started"]) for v in listed] == [(1, True, True), (2, False, False)]
    not_ready = {"error": ":not_ready", "details": {"version": 2}}
    assert api.post("/pipelines/call/orders/2", {"n": 1}).json == not_ready
    started = api.ok("POST", "/pipelines/start/orders/2")
    assert started == {"ok": "Elixir.Kraken.Pipelines.Orders", "version": 2}
    assert api.ok("POST", "/pipelines/call/orders/2", {"n": 1})["after"] == "v2"
    assert api.ok("POST", "/call", {"type": "order", "n": 1})["after"] == "v1"

    results: list[Any] = []
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            batch = [{"type": "order", "n": n + i} for i in range(300)]
            n += 300
            results.extend(api.post("/stream", batch).lines)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    switched = api.ok("POST", "/pipelines/switch/orders/2")
    assert switched == {"ok": "orders", "version": 2, "previous": 1}
    time.sleep(1.0)
    assert api.ok("POST", "/pipelines/rollback/orders") == {"ok": "orders", "version": 1, "previous": 2}
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(60)
    seen = {(r.get("before"), r.get("after")) for r in results}
    assert seen == {("v1", "v1"), ("v2", "v2")}, seen  # both versions ran, never mixed in one event
    assert all(r["done"] == r["n"] for r in results)
    assert api.ok("POST", "/call", {"type": "order", "n": 5})["after"] == "v1"
    assert api.ok("POST", "/pipelines/call/orders/2", {"n": 1})["after"] == "v2"  # still beside

    diff = subprocess.run(
        [sys.executable, "-m", "kraken.cli", "pipeline", "--url", api.base, "diff", "orders", "1", "2"],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=_env(),
    )
    assert diff.returncode == 0
    assert '-        "before": "v1"' in diff.stdout and '+        "before": "v2"' in diff.stdout
    versions = subprocess.run(
        [sys.executable, "-m", "kraken.cli", "pipeline", "--url", api.base, "versions", "list", "orders"],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=_env(),
    )
    assert [v["live"] for v in json.loads(versions.stdout)] == [True, False]
    changes = api.ok("GET", "/pipelines/diff/orders?from=1&to=2")["changes"]
    assert changes == [
        {"path": "components[0].transform.before", "from": "v1", "to": "v2"},
        {"path": "components[2].transform.after", "from": "v1", "to": "v2"},
    ]

    server.stop()
    server.start()
    api = Http(server.port("http"))
    listed = api.ok("GET", "/pipelines/versions/orders")
    assert [(v["version"], v["live"], v["started"]) for v in listed] == [(1, True, True), (2, False, True)]
    assert api.ok("POST", "/call", {"type": "order", "n": 7})["after"] == "v1"
    assert api.ok("POST", "/pipelines/rollback/orders")["version"] == 2
    assert api.ok("GET", "/pipelines/version/orders/1") == orders("v1")
    history = sorted(p.name for p in (project / "history" / "pipelines" / "Orders").iterdir())
    assert history == ["v1.json", "v2.json"]
    assert json.loads((project / "history/pipelines/Orders/v2.json").read_text()) == orders("v2")
