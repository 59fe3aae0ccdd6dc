"""A small synchronous HTTP client for the pipeline tests, and the stub-process fixture."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support import REPO, _env


class Answer:
    def __init__(self, status: int, headers: Any, raw: bytes) -> None:
        self.status, self.headers, self.raw = status, headers, raw

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    @property
    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.raw.decode().splitlines() if line.strip()]


class Http:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Answer:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return Answer(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as e:
            return Answer(e.code, e.headers, e.read())

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None, raw: bytes | None = None) -> Answer:
        return self.request("POST", path, body, raw)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        answer = self.request(method, path, body)
        assert answer.status == 200, (path, answer.status, answer.raw)
        return answer.json


def wait_for(check: Any, timeout: float = 10, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def run_shop_stubs(tmp_path: Path) -> Iterator[dict[str, int]]:
    """The four online-shop stub services in their own twisted.web process."""
    ports_file = tmp_path / "stub-ports.json"
    log = open(tmp_path / "stubs.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.pipeline_shop_stubs", str(ports_file)],
        cwd=REPO,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(ports_file.exists, 20, "stub services to listen")
        yield json.loads(ports_file.read_text())
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def run_flaky_stub(tmp_path: Path, token: str) -> Iterator[int]:
    """The breakable stub service (:mod:`tests.integration.pipeline_flaky_stub`): its port."""
    port_file = tmp_path / "flaky-port"
    log = open(tmp_path / "flaky.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.pipeline_flaky_stub", str(port_file), token],
        cwd=REPO,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(port_file.exists, 20, "the flaky stub to listen")
        yield int(port_file.read_text())
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
