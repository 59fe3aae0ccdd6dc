"""A P2P cluster of real processes for the failure scenarios: N origins (fixed ports, so a
restarted one keeps its address), trackers, agents, an fs backend, optionally redis-server.

Synchronous helpers (``http.client``): a scenario kills, wipes and restarts processes between
requests, which reads best as a plain script.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from kraken.core.digest import Digest
from tests.hostile.rig import https
from tests.integration.p2p_fixtures import FAST_SCHEDULER, agent_config, origin_config
from tests.support import ServerProcess, free_ports, tls_section

NS = "team/ha"
NS_PATH = "team%2Fha"
DEAD_S3 = {"type": "s3", "bucket": "b", "endpoint_url": "http://127.0.0.1:9", "access_key_id": "x",
           "secret_access_key": "y"}  # namespace down/...: a backend that never answers
HEALTH = {"health_interval": 0.2, "health_timeout": 0.5, "health_fails": 2, "health_passes": 1}


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
    pki: Path | None = None, role: str = "client", timeout: float = 60,
) -> tuple[int, bytes]:
    """One request on a fresh connection (HTTPS with *pki*), its status and body."""
    if pki is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, context=https(pki, role), timeout=timeout)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_for(check: Any, timeout: float = 15.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every)


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if (line.startswith(name + " ") or line.startswith(name + "{")) and not line.startswith("#"))


class RedisServer:
    """``redis-server`` on a loopback port, no persistence; stop and start keep the port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        (self.port,) = free_ports(1)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = open(self.workdir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)], stdout=log, stderr=subprocess.STDOUT)
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        assert wait_for(lambda: _pings(client), 10), "redis-server did not start"
        client.close()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


class Cluster:
    """Origins ``o0..`` sharing one backend directory, trackers ``t0..``, agents on demand."""

    def __init__(
        self, servers: ServerProcess.Pool, pki: Path, root: Path, origins: int = 2, trackers: int = 1,
        max_replica: int = 2, peer_store: str = "memory", prefix: str = "", origin_egress: int = 0,
        **origin_extra: Any,
    ) -> None:
        self.servers = servers
        self.pki = pki
        self.root = root
        self.backend = root / "backend"
        self.backend.mkdir(parents=True, exist_ok=True)
        self.origin_ports = free_ports(origins)
        self.cluster = [f"127.0.0.1:{p}" for p in self.origin_ports]
        self.origins: list[ServerProcess] = []
        for i, port in enumerate(self.origin_ports):
            config = origin_config(pki, root / f"o{i}", self.backend, cluster=self.cluster,
                                   max_replica=max_replica, self_address=self.cluster[i],
                                   writeback_retry_first=0.1, writeback_retry_cap=0.5,
                                   **{**HEALTH, **origin_extra})
            config["listen"] = [f"tls:tcp:{port}:interface=127.0.0.1"]
            config["origin"]["backends"].insert(0, {"namespace": "down/.*", "backend": DEAD_S3})
            config["bandwidth"] = {"egress_bits_per_sec": origin_egress}
            self.origins.append(servers.start("kraken-origin", config, name=f"{prefix}o{i}"))
        self.tracker_ports = free_ports(trackers)
        self.trackers: list[ServerProcess] = []
        for i, port in enumerate(self.tracker_ports):
            config = {
                "listen": [f"tls:tcp:{port}:interface=127.0.0.1"],
                "tls": tls_section(pki, "tracker"),
                "tracker": {"origins": self.cluster, "announce_interval": 0.5, "origin_cache_ttl": 1.0,
                            "peer_store": peer_store},
            }
            self.trackers.append(servers.start("kraken-tracker", config, name=f"{prefix}t{i}"))
        self.agents: list[ServerProcess] = []

    def agent(self, name: str, **extra: Any) -> ServerProcess:
        # an origin wiped and restarted refuses a peer until it fetched the blob again: redial soon
        scheduler = {"seeder_announce_interval": 0.5, "redial_after": 1.0, **extra.pop("scheduler", {})}
        config = agent_config(self.pki, self.root / name, self.tracker_ports[0], scheduler=scheduler, **extra)
        config["agent"]["trackers"] = [f"127.0.0.1:{p}" for p in self.tracker_ports]
        config["agent"]["unavailable_timeout"] = 20.0
        proc = self.servers.start("kraken-agent", config, name=name)
        self.agents.append(proc)
        return proc

    def owners(self, d: Digest) -> list[int]:
        """Ports of the origins owning *d*, as any live origin tells it."""
        for port in self.origin_ports:
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=https(self.pki), timeout=5)
                conn.request("GET", f"/blobs/{d}/locations")
                response = conn.getresponse()
                response.read()
                hosts = response.getheader("Origin-Locations") or ""
                conn.close()
                return [int(h.rsplit(":", 1)[1]) for h in hosts.split(",") if h]
            except OSError:
                continue
        raise RuntimeError("no origin answered")

    def origin_at(self, port: int) -> ServerProcess:
        return self.origins[self.origin_ports.index(port)]

    def push(self, data: bytes, port: int | None = None, chunk: int | None = None) -> Digest:
        """Upload to the first owner (or *port*) in PATCHes of *chunk* bytes; the digest."""
        d = Digest.of_bytes(data)
        port = port or self.owners(d)[0]
        base = f"/namespace/{NS_PATH}/blobs/{d}/uploads"
        status, body = request(port, "POST", base, pki=self.pki)
        if status == 409:
            return d
        assert status == 200, body
        uid = json.loads(body)["uid"]
        step = chunk or len(data) or 1
        for start in range(0, len(data), step):
            end = min(len(data), start + step)
            status, body = request(port, "PATCH", f"{base}/{uid}", data[start:end],
                                   {"Content-Range": f"{start}-{end}"}, pki=self.pki)
            assert status == 200, body
        status, body = request(port, "PUT", f"{base}/{uid}", pki=self.pki)
        assert status == 201, body
        return d

    def pull(
        self, agent: ServerProcess, d: Digest, timeout: float = 60, ns: str = NS_PATH
    ) -> tuple[int, bytes]:
        return request(agent.port("http"), "GET", f"/namespace/{ns}/blobs/{d}", timeout=timeout)

    def written_back(self, d: Digest) -> bool:
        return (self.backend / d.hex).is_file()

    def wipe(self, proc: ServerProcess) -> None:
        """Delete a stopped server's store (its disk lost)."""
        store = Path(proc.config["origin" if proc.plugin == "kraken-origin" else "agent"]["store"])
        shutil.rmtree(store, ignore_errors=True)

    def reconfigure(self, proc: ServerProcess, section: str, **values: Any) -> None:
        proc.config[section] = {**proc.config[section], **values}
        proc.config_file.write_text(yaml.safe_dump(proc.config))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = ["FAST_SCHEDULER", "NS", "Cluster", "RedisServer", "metric", "request", "sha", "wait_for"]
