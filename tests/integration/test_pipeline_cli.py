"""``kraken pipeline …`` against a real kraken-pipeline process."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support import REPO, ServerProcess, _env


def kraken(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kraken.cli", "pipeline", "--url", f"http://127.0.0.1:{port}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=_env(),
    )


def test_cli_apply_call_stream_and_errors(servers: ServerProcess.Pool, tmp_path: Path) -> None:
    port = servers.start("kraken-pipeline", {"listen": ["tcp:0:interface=127.0.0.1"]}).port("http")
    applied = kraken(port, "apply", "etc/pipeline-project")
    assert applied.returncode == 0, applied.stderr
    nowhere = kraken(port, "apply", str(tmp_path / "nonexistent"))
    assert nowhere.returncode == 1 and "is not a project folder" in nowhere.stderr
    listed = kraken(port, "services", "list")
    assert json.loads(listed.stdout) == ["greeter", "kv-store", "simple-math"]
    called = kraken(port, "call", '{"type": "math", "x": 1, "y": 2}')
    assert json.loads(called.stdout) == {"type": "math", "x": 1, "y": 2, "z": 3}
    events = tmp_path / "events.json"
    events.write_text(json.dumps([{"x": 1, "y": 2}, {"x": 3, "y": 4}]))
    streamed = kraken(port, "pipelines", "stream", "the-pipeline", f"@{events}")
    assert [json.loads(line)["z"] for line in streamed.stdout.splitlines()] == [3, 7]
    direct = kraken(port, "services", "call", "simple-math", "add", '{"a": 2, "b": 3}')
    assert json.loads(direct.stdout) == {"ok": {"sum": 5}}
    missing = kraken(port, "pipelines", "status", "nope")
    assert json.loads(missing.stdout) == {"status": ":undefined"}
    refused = kraken(port, "pipelines", "start", "nope")
    assert refused.returncode == 1 and json.loads(refused.stderr) == {"error": ":undefined"}


def test_cli_and_api_token(servers: ServerProcess.Pool) -> None:
    cfg = {"listen": ["tcp:0:interface=127.0.0.1"], "pipeline": {"api_token": "s3cret"}}
    port = servers.start("kraken-pipeline", cfg).port("http")
    refused = kraken(port, "pipelines", "list")
    assert refused.returncode == 1 and json.loads(refused.stderr) == {"error": ":unauthorized"}
    allowed = kraken(port, "--token", "s3cret", "pipelines", "list")
    assert allowed.returncode == 0 and json.loads(allowed.stdout) == []
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
        assert json.loads(resp.read()) == {"status": "ok"}
