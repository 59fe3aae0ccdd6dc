"""Secret references in client start options through a real twistd process: resolved at
start (the stub service sees the token), never in an API answer, a log line, an error or the
SQLite file."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.pipeline_http import Answer, Http, run_flaky_stub
from tests.support import ServerProcess

TOKEN = "tok-" + secrets.token_hex(12)
FILE_SECRET = "file-" + secrets.token_hex(12)


@pytest.fixture
def flaky(tmp_path: Path) -> Iterator[int]:
    yield from run_flaky_stub(tmp_path, TOKEN)


class Recording(Http):
    """Keeps every answer's bytes, to grep them all at the end."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.seen: list[bytes] = []

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Answer:
        answer = super().request(method, path, body, raw)
        self.seen.append(bytes(answer.raw) + str(dict(answer.headers)).encode())
        return answer


def http_service(name: str, start: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "client": {"module": "OctopusClientHttpFinch", "start": start},
        "interface": {
            "work": {
                "prepare": {"method": "POST", "path": "/work", "body": {"n": "args['n']"}},
                "call": {"parse_json_body": True},
                "transform": {"done": "args['body']['done']"},
                "output": {"done": {"type": "integer"}, "required": ["done"]},
            }
        },
    }


def test_secrets_resolved_at_start_and_never_shown(
    servers: ServerProcess.Pool, tmp_path: Path, flaky: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KRAKEN_TEST_SECRET_TOKEN", TOKEN)
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "key").write_text(FILE_SECRET + "\n")
    config = {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "pipeline": {
            "database": str(tmp_path / "db" / "pipeline.sqlite3"),
            "outbound_allow": [f"127.0.0.1:{flaky}"],
            "secret_env": ["KRAKEN_TEST_SECRET_*"],
            "secret_files": [str(folder)],
        },
    }
    server = servers.start("kraken-pipeline", config)
    api = Recording(server.port("http"))
    token_ref, file_ref = "${env:KRAKEN_TEST_SECRET_TOKEN}", f"${{file:{folder}/key}}"
    start = {
        "base_url": f"http://127.0.0.1:{flaky}",
        "headers": {"Authorization": f"Bearer {token_ref}", "X-Key": file_ref},
    }
    api.ok("POST", "/services/define", http_service("flaky", start))
    started = api.ok("POST", "/services/start/flaky")
    assert started["ok"]["headers"] == {"Authorization": f"Bearer {token_ref}", "X-Key": file_ref}
    assert api.ok("GET", "/services/state/flaky")["headers"]["X-Key"] == file_ref
    assert api.ok("GET", "/services/definition/flaky")["client"]["start"] == start
    # the stub only answers with the right token: the reference was resolved
    assert api.ok("POST", "/services/call/flaky/work", {"n": 7}) == {"ok": {"done": 7}}

    # a start error quoting a value names the reference instead
    lam = {"name": "lam", "client": {"module": "lambda", "start": {"module": file_ref}}, "interface": {}}
    api.ok("POST", "/services/define", lam)
    refused = api.post("/services/start/lam")
    assert refused.status == 400 and file_ref in refused.json["error"], refused.raw

    # a call error quoting the URL (an outbound refusal) names the reference instead
    api.ok("POST", "/services/define", http_service("elsewhere", {"base_url": f"http://127.0.0.1:1/{token_ref}"}))
    api.ok("POST", "/services/start/elsewhere")
    failed = api.post("/services/call/elsewhere/work", {"n": 1})
    assert failed.status == 400 and token_ref in failed.json["details"]["message"], failed.raw

    # references outside the configured variables and folders are refused, naming the rule
    refusals = (("${env:HOME}", "pipeline.secret_env"), ("${file:/etc/hostname}", "pipeline.secret_files"))
    for ref, rule in refusals:
        api.ok("POST", "/services/define", http_service("nosy", {"base_url": f"http://127.0.0.1:{flaky}/{ref}"}))
        nosy = api.post("/services/start/nosy")
        assert nosy.status == 400 and rule in nosy.json["error"], nosy.raw
    missing = "${env:KRAKEN_TEST_SECRET_UNSET}"
    api.ok("POST", "/services/define", http_service("nosy", {"base_url": f"http://127.0.0.1:{flaky}/{missing}"}))
    assert "is not set" in api.post("/services/start/nosy").json["error"]

    api.get("/metrics")
    server.stop()
    server.start()  # restored from SQLite: started again, references resolved again
    api.base = f"http://127.0.0.1:{server.port('http')}"
    assert api.ok("POST", "/services/call/flaky/work", {"n": 8}) == {"ok": {"done": 8}}
    assert api.ok("GET", "/services/state/flaky")["headers"]["Authorization"] == f"Bearer {token_ref}"
    server.stop()

    everything = b"\n".join(api.seen) + server.log().encode()
    everything += b"".join(p.read_bytes() for p in (tmp_path / "db").iterdir())
    for secret in (TOKEN, FILE_SECRET):
        assert secret.encode() not in everything
    assert file_ref.encode() in everything  # the grep looks where the values would be
