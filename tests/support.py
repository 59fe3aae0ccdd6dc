"""Helpers for tests: real twistd server processes and TLS settings from the dev PKI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from kraken.core.config import TLSSection
from kraken.core.tls import TLSSettings

REPO = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).with_name("twistd"))


def free_ports(count: int, kind: int = socket.SOCK_STREAM) -> list[int]:
    """*count* distinct loopback ports free right now (held open together, so none repeats)."""
    sockets = [socket.socket(socket.AF_INET, kind) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    return free_ports(1, kind)[0]


def tls_section(pki: Path, name: str, require_client_cert: bool = True) -> dict[str, Any]:
    """A ``tls`` config section using ``<name>.pem`` of the dev PKI."""
    return {
        "ca": str(pki / "ca.pem"),
        "cert": str(pki / f"{name}.pem"),
        "key": str(pki / f"{name}.key"),
        "require_client_cert": require_client_cert,
    }


def tls_settings(pki: Path, name: str, require_client_cert: bool = True) -> TLSSettings:
    settings = TLSSettings.from_config(TLSSection(**tls_section(pki, name, require_client_cert)))
    assert settings is not None
    return settings


def run_twistd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``twistd -n ARGS...`` to completion (for option and config errors)."""
    return subprocess.run(
        [TWISTD, "--pidfile=", "-n", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=_env(),
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class ServerProcess:
    """One ``twistd -n <plugin> --config FILE`` child process, ready once it wrote its ports."""

    def __init__(
        self,
        plugin: str,
        config: dict[str, Any],
        workdir: Path,
        extra_args: list[str],
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.plugin = plugin
        self.preexec_fn = preexec_fn  # run in the child before twistd (e.g. to lower its rlimits)
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port_file = workdir / "ports.json"
        self.log_file = workdir / "server.log"
        self.config_file = workdir / "config.yaml"
        self.config = dict(config)
        self.config["port_file"] = str(self.port_file)
        self.config_file.write_text(yaml.safe_dump(self.config))
        self.args = [TWISTD, "--pidfile=", "-n", plugin, "--config", str(self.config_file), *extra_args]
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    def start(self, timeout: float = 30) -> ServerProcess:
        self.port_file.unlink(missing_ok=True)
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            self.args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=_env(),
            preexec_fn=self.preexec_fn,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.plugin} exited with {self.proc.returncode}:\n{self.log()}")
            if self.port_file.exists():
                self.ports = json.loads(self.port_file.read_text())
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.plugin} did not start within {timeout}s:\n{self.log()}")

    def port(self, name: str | None = None) -> int:
        if name is None:
            return next(iter(self.ports.values()))
        return self.ports[name]

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def send_signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        """Stop at once, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 10) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    class Pool:
        def __init__(self, root: Path) -> None:
            self.root = root
            self.started: list[ServerProcess] = []

        def start(
            self,
            plugin: str,
            config: dict[str, Any],
            name: str | None = None,
            extra_args: list[str] | None = None,
            preexec_fn: Callable[[], None] | None = None,
        ) -> ServerProcess:
            name = name or f"{plugin}-{len(self.started)}"
            proc = ServerProcess(plugin, config, self.root / name, extra_args or [], preexec_fn)
            self.started.append(proc)
            return proc.start()

        def stop_all(self) -> None:
            for proc in reversed(self.started):
                proc.stop()
