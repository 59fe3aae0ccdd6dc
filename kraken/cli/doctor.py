"""``kraken doctor``: check a running dev cluster end to end, one line per check.

Each server's ``/health``, a tiny blob pushed to the origins and pulled back through the agent,
a publish seen by a subscriber, a state read and a pipeline call. Exit 1 if any check fails.
"""

from __future__ import annotations

import argparse
import functools
import json
import secrets
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kraken.cli.hints import MAKE_CERTS, unreachable
from kraken.cli.pubsub import Connection, ServerError
from kraken.core.tls import stdlib_client_context
from kraken.pubsub import wire

EXAMPLE = """example:
  bash scripts/cluster.sh &        # or in another terminal
  kraken doctor"""


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    tls: bool


# The dev cluster's HTTP ports (etc/*.yaml); kraken-pubsub's is its admin API.
SERVERS: tuple[Server, ...] = (
    Server("kraken-tracker", 15001, True),
    Server("kraken-origin", 15002, True),
    Server("kraken-build-index", 15004, True),
    Server("kraken-agent", 16000, False),
    Server("kraken-proxy", 15000, False),
    Server("kraken-pubsub", 12356, False),
    Server("kraken-state", 3141, True),
    Server("kraken-pipeline", 4001, False),
)


SERVER = {server.name: server for server in SERVERS}


class CheckFailed(Exception):
    pass


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "doctor",
        help="check a running dev cluster end to end",
        description=__doc__,
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="where the dev cluster runs [%(default)s]")
    p.add_argument("--pki", default="run/pki", help="directory with ca.pem and client.pem/.key [%(default)s]")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds each check may take [%(default)s]")
    p.set_defaults(func=_doctor)


class Doctor:
    def __init__(self, host: str, pki: Path, timeout: float) -> None:
        self.host = host
        self.pki = pki
        self.timeout = timeout
        self._contexts: dict[str, ssl.SSLContext] = {}

    def context(self, server: Server) -> ssl.SSLContext:
        """Our client certificate, and only a server presenting the role its name says."""
        role = server.name.removeprefix("kraken-")
        if role not in self._contexts:
            ca, cert, key = self.pki / "ca.pem", self.pki / "client.pem", self.pki / "client.key"
            for path in (ca, cert, key):
                if not path.exists():
                    raise CheckFailed(f"no {path}: create the dev certificates with `{MAKE_CERTS}`")
            context = stdlib_client_context(str(ca), str(cert), str(key), {role})
            context.check_hostname = False  # dev certificates name roles, not hosts
            self._contexts[role] = context
        return self._contexts[role]

    def url(self, server: Server, path: str) -> str:
        return f"{'https' if server.tls else 'http'}://{self.host}:{server.port}{path}"

    def http(self, server: Server, path: str, body: Any = None) -> Any:
        url = self.url(server, path)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(
                request, timeout=self.timeout, context=self.context(server) if server.tls else None
            ) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            text = e.read()[:200].decode("utf-8", "replace")
            raise CheckFailed(f"{url} answered {e.code}: {text}") from None
        except (urllib.error.URLError, OSError) as e:
            raise CheckFailed(unreachable(f"{self.host}:{server.port}", getattr(e, "reason", e))) from None

    def health(self, server: Server) -> str:
        answer = self.http(server, "/health")
        if not isinstance(answer, dict) or answer.get("status") != "ok":
            raise CheckFailed(f"/health answered {answer!r}")
        return self.url(server, "/health")

    def blob_round_trip(self) -> str:
        kraken = [sys.executable, "-m", "kraken.cli", "blob"]
        data = secrets.token_bytes(4096)
        with tempfile.TemporaryDirectory(prefix="kraken-doctor-") as tmp:
            source, copy = Path(tmp, "blob"), Path(tmp, "copy")
            source.write_bytes(data)
            origin, agent = f"{self.host}:15002", f"{self.host}:16000"
            pushed = self._run([*kraken, "push", str(source), "--origin", origin, "--pki", str(self.pki)])
            digest = pushed.strip()
            self._run([*kraken, "pull", digest, "-o", str(copy), "--agent", agent, "--quiet"])
            if copy.read_bytes() != data:
                raise CheckFailed("the pulled copy differs from the pushed bytes")
        return f"4 KiB pushed to the origins and pulled through the agent ({digest[:19]}...)"

    def _run(self, command: list[str]) -> str:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout * 3)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"`{' '.join(command[2:4])}` took over {self.timeout * 3:.0f} s") from None
        if done.returncode != 0:
            raise CheckFailed(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
        return done.stdout

    def publish_and_poll(self) -> str:
        topic = f"kraken-doctor-{secrets.token_hex(4)}".encode()
        message = secrets.token_hex(8).encode()
        address = f"{self.host}:12355"
        try:
            subscriber = Connection(address, self.timeout)
            publisher = Connection(address, self.timeout)
            try:
                subscriber.call(wire.set_command(b"subscribe", topic))
                publisher.call(wire.set_command(b"publish", wire.publish_body([([topic], message)])))
                deadline = time.monotonic() + self.timeout
                while time.monotonic() < deadline:
                    records = subscriber.call(wire.get_command()).records()
                    if ([topic], message) in records:
                        return f"published to {topic.decode()} and polled it back on {address}"
                    time.sleep(0.05)
            finally:
                subscriber.close()
                publisher.close()
        except ServerError as e:
            raise CheckFailed(str(e)) from None
        raise CheckFailed(f"the message did not arrive within {self.timeout:.0f} s")

    def state_read(self) -> str:
        nodes = self.http(SERVER["kraken-state"], "/cfg/nodes")["nodes"]
        return f"{len(nodes)} node{'s' if len(nodes) != 1 else ''} in the state engine's Cfg"

    def pipeline_call(self) -> str:
        answer = self.http(SERVER["kraken-pipeline"], "/call", {"type": "hello", "name": "kraken doctor"})
        if not isinstance(answer, dict) or "message" not in answer:
            raise CheckFailed(f"/call answered {answer!r}")
        return f"/call answered {answer['message']!r}"


def checks(doctor: Doctor) -> list[tuple[str, Callable[[], str]]]:
    listed: list[tuple[str, Callable[[], str]]] = [
        (f"{server.name} health", functools.partial(doctor.health, server)) for server in SERVERS
    ]
    listed += [
        ("blob round trip", doctor.blob_round_trip),
        ("pub/sub publish and poll", doctor.publish_and_poll),
        ("state read", doctor.state_read),
        ("pipeline call", doctor.pipeline_call),
    ]
    return listed


def _doctor(args: argparse.Namespace) -> int:
    doctor = Doctor(args.host, Path(args.pki), args.timeout)
    failed = 0
    for name, check in checks(doctor):
        started = time.monotonic()
        try:
            detail = check()
        except CheckFailed as e:
            failed += 1
            print(f"FAIL  {name:<28} {e}", flush=True)
            continue
        print(f"ok    {name:<28} {detail} ({(time.monotonic() - started) * 1000:.0f} ms)", flush=True)
    if failed:
        print(f"{failed} check{'s' if failed != 1 else ''} failed", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0
