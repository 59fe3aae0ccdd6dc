"""The dev cluster as the README starts it (`bash scripts/cluster.sh`), in a scratch copy of the
checkout: its fixed loopback ports from etc/*.yaml, its `run/` directory inside the copy."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COPIED = ("etc", "scripts", "docs", "README.md", "setup.cfg", "pyproject.toml")
PORTS = (
    15000, 15001, 15002, 15003, 15004, 16000, 16001, 5055, 12355, 12356, 12357, 12358, 3141, 4001, 8470, 8471
)


@dataclass
class DevCluster:
    root: Path
    env: dict[str, str]
    proc: subprocess.Popen[str]
    output: list[str]

    def servers(self) -> dict[str, int]:
        """twistd pid by tap name, for the servers this cluster started."""
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            parent = int(stat.rpartition(")")[2].split()[1])
            names = [a.decode() for a in args if a.startswith(b"kraken-")]
            if parent == self.proc.pid and names:
                found[names[0]] = int(entry.name)
        return found


def _venv() -> Path:
    venv = Path(sys.prefix)
    if not (venv / "bin" / "kraken").exists():
        pytest.skip(f"the kraken command is not installed in {venv} (bash scripts/setup.sh installs it)")
    return venv


def _busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def make_copy(target: Path) -> tuple[Path, dict[str, str]]:
    venv = _venv()
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / name)
    (target / ".venv").symlink_to(venv)
    stamp = venv / ".kraken-installed"
    if stamp.exists():  # scripts/setup.sh must see an up-to-date install and not reinstall
        old = stamp.stat().st_mtime - 1
        for name in ("setup.cfg", "pyproject.toml"):
            os.utime(target / name, (old, old))
    env = dict(os.environ)
    env["PATH"] = f"{target / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return target, env


def start(root: Path, env: dict[str, str], timeout: float = 60) -> DevCluster:
    busy = [p for p in PORTS if _busy(p)]
    if busy:
        pytest.fail(f"the dev cluster's ports {busy} are in use: is a dev cluster already running?")
    proc = subprocess.Popen(
        ["bash", "scripts/cluster.sh"], cwd=root, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    cluster = DevCluster(root, env, proc, [])
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        cluster.output.append(line)
        if line.startswith("all started") or time.monotonic() > deadline:
            break
    if not cluster.output or not cluster.output[-1].startswith("all started"):
        stop(cluster)
        pytest.fail("the dev cluster did not start:\n" + "".join(cluster.output))
    return cluster


def stop(cluster: DevCluster) -> None:
    servers = cluster.servers()
    for signum, wait in ((signal.SIGINT, 20), (signal.SIGTERM, 10)):  # Ctrl-C, as the README says
        if cluster.proc.poll() is not None:
            break
        cluster.proc.send_signal(signum)
        try:
            cluster.proc.wait(wait)
        except subprocess.TimeoutExpired:
            pass
    if cluster.proc.poll() is None:
        os.killpg(cluster.proc.pid, signal.SIGKILL)
        cluster.proc.wait(5)
    left = [name for name, pid in servers.items() if Path(f"/proc/{pid}").exists()]
    assert not left, f"servers still running after the cluster stopped: {left}"


@pytest.fixture(scope="module")
def dev_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """One cluster per test module: other modules (test_cluster.py) start their own on the same
    fixed ports, so none may outlive its module."""
    root, env = make_copy(tmp_path_factory.mktemp("checkout"))
    cluster = start(root, env)
    try:
        yield cluster
    finally:
        stop(cluster)
