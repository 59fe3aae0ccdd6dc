"""``kraken cluster up``: every built kraken server on this machine, on embedded defaults.

Creates a dev CA in ``run/pki`` (beside ``etc/``) on first use, then starts ``twistd -n kraken-<name> --config
etc/<name>.yaml`` for each server registered as a twistd plugin, logs to ``run/logs/``, prints
where each one listens, and stops them all on Ctrl-C (or at once with ``--check``).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kraken.core import certs
from kraken.registry.accounts import ensure_dev_accounts

# Start order: what others depend on first.
ORDER = (
    "kraken-tracker",
    "kraken-origin",
    "kraken-build-index",
    "kraken-agent",
    "kraken-proxy",
    "kraken-pubsub",
    "kraken-state",
    "kraken-pipeline",
)


@dataclass
class Member:
    tapname: str
    config: Path
    run_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def port_file(self) -> Path:
        return self.run_dir / f"{self.short}.ports.json"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "logs" / f"{self.short}.log"

    @property
    def short(self) -> str:
        return self.tapname.removeprefix("kraken-")


def built_servers() -> list[str]:
    """Tap names of the kraken servers registered as twistd plugins, in start order."""
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    names = {p.tapname for p in getPlugins(IServiceMaker) if p.tapname.startswith("kraken-")}
    return [n for n in ORDER if n in names] + sorted(names - set(ORDER))


def add_parser(sub: Any) -> None:
    p = sub.add_parser("cluster", help="run every built kraken server locally")
    csub = p.add_subparsers(dest="cluster_command", metavar="ACTION", required=True)
    up = csub.add_parser("up", help="start the servers and keep them running until Ctrl-C")
    up.add_argument("--etc", default="etc", help="directory of <server>.yaml configs [etc]")
    up.add_argument("--only", action="append", default=[], help="start just this server (repeatable)")
    up.add_argument("--check", action="store_true", help="start, check every server listens, stop")
    up.set_defaults(func=_up)


def _start(member: Member, twistd: str) -> None:
    member.log_file.parent.mkdir(parents=True, exist_ok=True)
    member.port_file.unlink(missing_ok=True)
    args = [twistd, "--pidfile=", "-n", member.tapname, "--config", str(member.config)]
    args += ["--set", f"port_file={member.port_file.resolve()}"]
    with open(member.log_file, "ab") as log:
        member.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)


def _wait(member: Member, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert member.proc is not None
        if member.proc.poll() is not None:
            return False
        if member.port_file.exists():
            member.ports = json.loads(member.port_file.read_text())
            return True
        time.sleep(0.1)
    return False


def _stop(members: list[Member]) -> None:
    for m in reversed(members):
        if m.proc and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGTERM)
    for m in members:
        if m.proc:
            try:
                m.proc.wait(10)
            except subprocess.TimeoutExpired:
                m.proc.kill()


def _shown(path: Path) -> str:
    """*path* relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _up(args: argparse.Namespace) -> int:
    etc = Path(args.etc)
    # The example configs name their certificates and data as ../run/... beside etc/.
    run_dir = etc.resolve().parent / "run"
    names = built_servers()
    if args.only:
        wanted = {n if n.startswith("kraken-") else f"kraken-{n}" for n in args.only}
        names = [n for n in names if n in wanted]
    if not names:
        print("kraken cluster: no kraken servers are built yet", file=sys.stderr)
        return 1
    certs.ensure_dev_pki(run_dir / "pki", {role: role for role in certs.ROLES})
    ensure_dev_accounts(run_dir / "registry")  # the proxy asks for a login (etc/proxy.yaml auth:)
    twistd = str(Path(sys.executable).with_name("twistd"))
    members = []
    for name in names:
        config = etc / f"{name.removeprefix('kraken-')}.yaml"
        if not config.exists():
            print(f"kraken cluster: skipping {name}: no {config}", file=sys.stderr)
            continue
        members.append(Member(name, config, run_dir))
    failed = []
    try:
        for m in members:
            _start(m, twistd)
            if _wait(m):
                listening = ", ".join(f"{k}={v}" for k, v in m.ports.items())
                print(f"{m.tapname:<20} up    {listening:<50} log {m.log_file}", flush=True)
            else:
                failed.append(m)
                print(f"{m.tapname:<20} FAILED (see {m.log_file})", flush=True)
        if failed:
            print("kraken cluster: some servers did not start; stopping the others", file=sys.stderr)
            return 1
        if args.check:
            return 0
        print("all started; Ctrl-C stops the cluster", flush=True)
        print("check it from another terminal: . .venv/bin/activate && kraken doctor", flush=True)
        if any(m.tapname == "kraken-proxy" for m in members):
            password = _shown(run_dir / "registry" / "password")
            print(f"push to the proxy after: skopeo login --tls-verify=false -u dev --password-stdin "
                  f"127.0.0.1:15000 < {password}", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            for m in members:
                if m.proc and m.proc.poll() is not None:
                    print(f"{m.tapname} exited with {m.proc.returncode} (see {m.log_file})", file=sys.stderr)
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        _stop(members)
