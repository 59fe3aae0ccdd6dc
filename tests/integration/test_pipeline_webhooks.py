"""Signed webhooks through a real twistd process: HMAC checked on the raw body, the API token
not needed (the signature is the credential), the secret a reference never shown."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kraken.pipeline.triggers.webhooks import signature
from tests.support import REPO, ServerProcess, _env

SECRET = "hook-" + secrets.token_hex(16)
TOKEN = "api-" + secrets.token_hex(8)


def request(port: int, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers,
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_signed_webhooks_feed_a_pipeline(
    servers: ServerProcess.Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KRAKEN_TEST_HOOK_SECRET", SECRET)
    config = {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "pipeline": {"database": str(tmp_path / "db.sqlite3"), "api_token": TOKEN,
                     "secret_env": ["KRAKEN_TEST_HOOK_*"]},
    }
    server = servers.start("kraken-pipeline", config)
    port = server.port("http")
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    def api(path: str, body: Any = None, method: str = "POST") -> Any:
        data = None if method == "GET" else json.dumps(body if body is not None else {}).encode()
        status, answer = request(port, path, data, auth)
        assert status == 200, (path, answer)
        return answer

    stage = {"type": "stage", "transform": {"built": "args['ref']"}}
    api("/pipelines/define", {"name": "ci", "components": [stage]})
    api("/pipelines/start/ci")
    hook = {
        "name": "github", "type": "webhook", "pipeline": "ci",
        "secret": "${env:KRAKEN_TEST_HOOK_SECRET}", "signature_header": "X-Hub-Signature-256",
    }
    assert api("/triggers/define", hook) == {"ok": "github"}
    assert api("/triggers", method="GET") == ["github"]
    listed = subprocess.run(
        [sys.executable, "-m", "kraken.cli", "pipeline", "--url", f"http://127.0.0.1:{port}",
         "--token", TOKEN, "triggers", "status", "github"],
        capture_output=True, text=True, timeout=60, cwd=REPO, env=_env(),
    )
    assert listed.returncode == 0 and json.loads(listed.stdout)["type"] == "webhook", listed.stderr
    assert api("/triggers/definition/github", method="GET")["secret"] == "${env:KRAKEN_TEST_HOOK_SECRET}"

    body = json.dumps({"ref": "main"}).encode()
    signed = {"X-Hub-Signature-256": signature(SECRET.encode(), body)}
    assert request(port, "/hooks/github", body, signed) == (200, {"ok": [{"ref": "main", "built": "main"}]})
    bad = {"X-Hub-Signature-256": signature(b"wrong secret, long enough", body)}
    assert request(port, "/hooks/github", body, bad) == (
        401, {"error": ":bad_signature", "details": {"header": "X-Hub-Signature-256"}}
    )
    assert request(port, "/hooks/github", body, {})[0] == 401
    assert request(port, "/hooks/nope", body, signed) == (400, {"error": ":undefined"})
    assert request(port, "/triggers", None, {})[0] == 401  # the rest of the API still needs the token
    status = api("/triggers/status/github", method="GET")
    assert (status["accepted"], status["refused"], status["delivered"]) == (1, 2, 1)

    literal = {**hook, "name": "literal", "secret": "a literal secret of enough length"}
    api("/triggers/define", literal)
    assert api("/triggers/definition/literal", method="GET")["secret"] == "(hidden)"
    assert api("/triggers/delete/literal") == {"ok": "ok"}

    server.stop()
    server.start()  # the trigger is kept, its secret resolved again
    port = server.port("http")
    assert request(port, "/hooks/github", body, signed)[0] == 200
    server.stop()
    assert SECRET not in server.log() and "a literal secret" not in server.log()
