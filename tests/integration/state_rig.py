"""Helpers for the kraken-state integration tests: configs, clients, waiting for state."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from kraken.core import certs
from kraken.state.client import StateClient
from tests.support import REPO, ServerProcess, _env, tls_section

PARENT_ID = "aaaaaaaa-0000-0000-0000-000000000001"


def state_config(pki: Path, tmp: Path, cert: str = "state", **state: Any) -> dict[str, Any]:
    section = {
        "id": PARENT_ID,
        "db": str(tmp / "cfg.sqlite"),
        "ws_listen": ["tls:tcp:0:interface=127.0.0.1"],
        "sync_listen": ["tls:tcp:0:interface=127.0.0.1"],
        "modules": ["sim", "freebusy"],
        "module_config": {"sim": {"latency": 0.05, "timeout": 5}},
        "retry_delay": 1.0,
        **state,
    }
    return {
        "listen": ["tls:tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, cert),
        "log": {"level": "debug"},
        "state": section,
    }


def client(pki: Path, proc: ServerProcess, role: str = "client") -> StateClient:
    return StateClient(
        f"https://127.0.0.1:{proc.port('http')}",
        ca=str(pki / "ca.pem"),
        cert=str(pki / f"{role}.pem"),
        key=str(pki / f"{role}.key"),
        timeout=10,
    )


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last value {last!r}")


def issue_node_cert(pki: Path, name: str) -> None:
    if not (pki / f"{name}.pem").exists():
        certs.issue(pki, name, "state")


class ConsoleCli:
    """``kraken state console`` with its stdin, stdout and stderr as pipes, read in threads."""

    def __init__(self, pki: Path, port: int, node: str, *extra: str, stdin: int = subprocess.PIPE) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kraken.cli", "state", "--url", f"https://127.0.0.1:{port}",
             "--pki", str(pki), "console", node, *extra],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=_env(),
        )  # fmt: skip
        self.out = bytearray()
        self.err = bytearray()
        for stream, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, into), daemon=True).start()

    @staticmethod
    def _read(stream: IO[bytes] | None, into: bytearray) -> None:
        assert stream is not None
        while data := stream.read1(4096):  # type: ignore[attr-defined]
            into += data

    def type(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def end(self, timeout: float = 15) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
