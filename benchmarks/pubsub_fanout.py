#!/usr/bin/env python3
"""Fan-out benchmark: kraken-pubsub against redis-server PUBLISH/SUBSCRIBE, same load generator.

One publisher and N subscribers (1, 10, 100) share one selectors loop in this process; the
publisher pipelines 100-byte messages on one topic, keeping at most WINDOW messages in flight
end to end (published but not yet received by the slowest subscriber, so neither server is
driven into unbounded buffering), and every subscriber counts what it receives. Measured:
delivered messages per second and the p99 publish→receive latency (each received batch
weighted by its size, timed by its oldest message). Both servers start here on 127.0.0.1
and are stopped at the end.

On a shared machine a server's rate follows the CPU share the scheduler gives it, so each
row also shows the server processes' CPU time per delivered message (from /proc, all
processes of the mode) and how busy the load generator itself was (its CPU time over the
run's wall time: near 100 % would mean the generator, not the server, set the rate).

    .venv/bin/python benchmarks/pubsub_fanout.py [--seconds 3] [--subscribers 1,10,100] [--repeat 3]

Modes: ``redis`` (baseline), ``kraken`` (memcached polling, one record per ``set publish``),
``kraken-batch`` (memcached polling, 50 records per ``set publish``), ``kraken-ws`` (WebSocket push),
``kraken-proxy3`` (the publisher at a root node, the polling subscribers spread over 3 proxy
nodes of it) and ``kraken-cluster3`` (publisher and polling subscribers spread over a 3-node
cluster; the publisher at the node that owns the topic's shard) and ``kraken-workers2`` (one
server with ``workers: 2``: publisher and subscribers land on either process). Proxies and cluster nodes
talk mutual TLS with certificates of a dev CA made in a temporary directory. The ratio
columns compare with Redis; ``--vs kraken`` compares with the single kraken node instead.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PAYLOAD_SIZE = 100
WINDOW = 2000  # messages in flight: sent, not yet received by the slowest subscriber
STAMP = struct.Struct("<d")


def payload() -> bytes:
    return STAMP.pack(time.monotonic()) + b"p" * (PAYLOAD_SIZE - STAMP.size)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


# --- servers ---------------------------------------------------------------------------------


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc, {"redis": port}


def start_kraken(
    workdir: Path, name: str = "kraken", listen: list[str] | None = None, **pubsub: Any
) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    port_file = workdir / f"{name}-ports.json"
    config: dict[str, Any] = {
        "listen": listen or ["tcp:0:interface=127.0.0.1"],
        "log": {"level": "warn"},
        "port_file": str(port_file),
        "pubsub": {
            "websocket_listen": ["tcp:0:interface=127.0.0.1"],
            "admin_listen": ["tcp:0:interface=127.0.0.1"],
            "max_tcp_clients": 20000,
            "max_tcp_clients_per_ip": 0,
            **pubsub,
        },
    }
    pki = workdir / "pki"
    if (pki / "pubsub.pem").exists():
        files = {"ca": "ca.pem", "cert": "pubsub.pem", "key": "pubsub.key"}
        config["tls"] = {name: str(pki / f) for name, f in files.items()}
    (workdir / f"{name}.json").write_text(json.dumps(config))  # JSON is YAML
    twistd = str(Path(sys.executable).with_name("twistd"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = workdir / f"{name}.log"
    proc = subprocess.Popen(
        [twistd, "--pidfile=", "-n", "kraken-pubsub", "--config", str(workdir / f"{name}.json")],
        cwd=workdir, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"kraken-pubsub {name} did not start:\n" + log.read_text())
        time.sleep(0.05)
    return proc, json.loads(port_file.read_text())


def start_proxy_tree(workdir: Path) -> tuple[list[subprocess.Popen[bytes]], dict[str, Any]]:
    """A root and 3 proxy nodes of it: publish at the root, subscribe at the proxies."""
    tls = "tls:tcp:0:interface=127.0.0.1"
    root, root_ports = start_kraken(workdir, "root", ["tcp:0:interface=127.0.0.1", tls])
    procs, sub_ports = [root], []
    for i in range(3):
        proc, ports = start_kraken(
            workdir, f"proxy{i}", upstream=[f"127.0.0.1:{root_ports['memcached-tls']}"],
            upstream_poll_interval=0.001,
        )
        procs.append(proc)
        sub_ports.append(ports["memcached"])
    return procs, {"pub": root_ports["memcached"], "subs": sub_ports}


def start_workers(workdir: Path) -> tuple[list[subprocess.Popen[bytes]], dict[str, Any]]:
    """One kraken-pubsub with ``workers: 2`` (2 processes sharing a reuseport: port)."""
    port = free_port()
    proc, _ = start_kraken(workdir, "workers", [f"reuseport:tcp:{port}:interface=127.0.0.1"], workers=2)
    time.sleep(3)  # the second worker starts and the first health checks pass
    return [proc], {"pub": port, "subs": [port]}


def start_cluster(workdir: Path) -> tuple[list[subprocess.Popen[bytes]], dict[str, Any]]:
    """3 cluster nodes; the publisher at the node whose shards include the topic's."""
    tls_ports = [free_port() for _ in range(3)]
    members = [f"127.0.0.1:{p}" for p in tls_ports]
    procs, plain = [], []
    for i, port in enumerate(tls_ports):
        proc, ports = start_kraken(
            workdir, f"node{i}", ["tcp:0:interface=127.0.0.1", f"tls:tcp:{port}:interface=127.0.0.1"],
            cluster_self=members[i], cluster_members=members, upstream_poll_interval=0.001,
        )
        procs.append(proc)
        plain.append(ports)
    time.sleep(2)  # the first health checks
    sys.path.insert(0, str(REPO))
    from kraken.pubsub.phash2 import shard_of

    with urllib.request.urlopen(f"http://127.0.0.1:{plain[0]['admin']}/status") as r:
        members_status = json.load(r)["cluster"]["members"]
    owner = next(m["node"] for m in members_status if shard_of(b"t", 4) in m["owned_shards"])
    return procs, {"pub": plain[members.index(owner)]["memcached"], "subs": [p["memcached"] for p in plain]}


# --- wire formats ----------------------------------------------------------------------------

KRAKEN_HEAD = b"MESSAGE t %d\r\n" % PAYLOAD_SIZE
KRAKEN_RECORD = len(KRAKEN_HEAD) + PAYLOAD_SIZE + 2
REDIS_HEAD = b"*3\r\n$7\r\nmessage\r\n$1\r\nt\r\n$%d\r\n" % PAYLOAD_SIZE
REDIS_RECORD = len(REDIS_HEAD) + PAYLOAD_SIZE + 2


class Subscriber:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.count = 0
        self.total = 0
        self.samples: list[tuple[float, int]] = []
        self.next_poll = 0.0

    def take(self, block: memoryview | bytes, head: int, size: int, now: float) -> None:
        """Count the fixed-size records in *block*; time the oldest."""
        n = len(block) // size
        if n:
            sent = STAMP.unpack_from(block, head)[0]
            self.samples.append((now - sent, n))
            self.count += n
            self.total += n


class RedisSub(Subscriber):
    def start(self) -> None:
        self.sock.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nt\r\n")
        expect = b"*3\r\n$9\r\nsubscribe\r\n$1\r\nt\r\n:1\r\n"
        got = b""
        while len(got) < len(expect):
            got += self.sock.recv(100)
        assert got == expect, got

    def readable(self, now: float) -> None:
        self.buf += self.sock.recv(262144)
        n = len(self.buf) // REDIS_RECORD * REDIS_RECORD
        if n:
            self.take(memoryview(self.buf)[:n], len(REDIS_HEAD), REDIS_RECORD, now)
            del self.buf[:n]


class KrakenPollSub(Subscriber):
    def start(self) -> None:
        self.sock.sendall(b"set subscribe 0 0 1\r\nt\r\n")
        assert self.sock.recv(100) == b"STORED\r\n"
        self.sock.sendall(b"get messages\r\n")

    def readable(self, now: float) -> None:
        self.buf += self.sock.recv(262144)
        buf = self.buf
        while True:
            if buf[:5] == b"END\r\n":
                del buf[:5]
                self.next_poll = now + 0.001  # an empty poll: wait a little, as a client would
                continue
            eol = buf.find(b"\r\n")
            if eol < 0 or not buf.startswith(b"VALUE "):
                return
            n = int(buf[17:eol])
            end = eol + 2 + n + 2
            if len(buf) < end + 5:
                return
            self.take(memoryview(buf)[eol + 2 : end], len(KRAKEN_HEAD), KRAKEN_RECORD, now)
            del buf[: end + 5]
            self.sock.sendall(b"get messages\r\n")

    def poll_due(self, now: float) -> None:
        if self.next_poll and now >= self.next_poll:
            self.next_poll = 0.0
            self.sock.sendall(b"get messages\r\n")


class KrakenPushSub(Subscriber):
    def start(self) -> None:
        key = base64.b64encode(os.urandom(16))
        host, port = self.sock.getpeername()[:2]
        self.sock.sendall(
            b"GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (host.encode(), port, key)
        )
        got = b""
        while b"\r\n\r\n" not in got:
            got += self.sock.recv(4096)
        assert got.startswith(b"HTTP/1.1 101"), got
        self.buf += got.split(b"\r\n\r\n", 1)[1]
        self.send_text(b'{"op": "subscribe", "topics": ["t"]}')
        self.pending_answers = 1

    def send_text(self, text: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(text))
        assert len(text) < 126
        self.sock.sendall(bytes([0x81, 0x80 | len(text)]) + mask + masked)

    def readable(self, now: float) -> None:
        self.buf += self.sock.recv(262144)
        buf = self.buf
        while len(buf) >= 2:
            opcode, size, head = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if size == 126:
                if len(buf) < 4:
                    return
                size, head = struct.unpack_from(">H", buf, 2)[0], 4
            elif size == 127:
                if len(buf) < 10:
                    return
                size, head = struct.unpack_from(">Q", buf, 2)[0], 10
            if len(buf) < head + size:
                return
            if opcode == 2:
                self.take(memoryview(buf)[head : head + size], len(KRAKEN_HEAD), KRAKEN_RECORD, now)
            del buf[: head + size]


# --- publishers ------------------------------------------------------------------------------


class Publisher:
    batch = 100  # commands per write

    def __init__(self, sock: socket.socket, subs: list[Subscriber]) -> None:
        self.sock = sock
        self.subs = subs
        self.sent = 0

    def pump(self) -> None:
        step = self.batch * self.per_command
        while self.sent - min(s.total for s in self.subs) + step <= WINDOW:
            self.sock.sendall(self.commands())
            self.sent += step

    per_command = 1

    def commands(self) -> bytes:
        raise NotImplementedError

    def readable(self) -> None:
        self.sock.recv(262144)  # acknowledgements; flow control is end to end


class RedisPub(Publisher):
    def commands(self) -> bytes:
        cmd = b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nt\r\n$%d\r\n%s\r\n" % (PAYLOAD_SIZE, payload())
        return cmd * self.batch


class KrakenPub(Publisher):
    def commands(self) -> bytes:
        record = KRAKEN_HEAD + payload() + b"\r\n"
        body = record * self.per_command
        return (b"set publish 0 0 %d\r\n%s\r\n" % (len(body), body)) * self.batch


class KrakenBatchPub(KrakenPub):
    batch = 4
    per_command = 25


# --- one run ---------------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of *pids* and their descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            stats[int(entry)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, list(pids)
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += int(stats[pid][11]) + int(stats[pid][12])
        todo += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


def run(mode: str, ports: dict[str, Any], subscribers: int, seconds: float) -> dict[str, float]:
    sel = selectors.DefaultSelector()
    server_pids = ports["pids"][mode]
    topology = ports.get("topologies", {}).get(mode, {})
    sub_class, port = {
        "redis": (RedisSub, ports.get("redis")),
        "kraken": (KrakenPollSub, ports.get("memcached")),
        "kraken-batch": (KrakenPollSub, ports.get("memcached")),
        "kraken-ws": (KrakenPushSub, ports.get("websocket")),
        "kraken-proxy3": (KrakenPollSub, None),
        "kraken-cluster3": (KrakenPollSub, None),
        "kraken-workers2": (KrakenPollSub, None),
    }[mode]
    subs: list[Any] = []
    for i in range(subscribers):
        if topology:
            port = topology["subs"][i % len(topology["subs"])]
        sock = socket.create_connection(("127.0.0.1", port or 0))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sub = sub_class(sock)
        sub.start()
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, sub)
        subs.append(sub)
    pub_port = ports["redis"] if mode == "redis" else topology.get("pub", ports["memcached"])
    pub_sock = socket.create_connection(("127.0.0.1", pub_port))
    pub_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    publisher = {"redis": RedisPub, "kraken-batch": KrakenBatchPub}.get(mode, KrakenPub)
    pub = publisher(pub_sock, subs)
    sel.register(pub_sock, selectors.EVENT_READ, pub)
    time.sleep(0.5 if topology else 0.2)  # subscriptions travel to the root / the peers
    warmup_end = time.monotonic() + 0.5
    end = warmup_end + seconds
    measuring = False
    polling = mode not in ("redis", "kraken-ws")
    while True:
        now = time.monotonic()
        if not measuring and now >= warmup_end:
            measuring = True
            for sub in subs:
                sub.count = 0
                sub.samples.clear()
            started = now
            server_cpu = cpu_seconds(server_pids)
            generator_cpu = time.process_time()
        if now >= end:
            break
        pub.pump()
        for key, _ in sel.select(timeout=0.001):
            if key.data is pub:
                pub.readable()
            else:
                key.data.readable(now)
        if polling:
            for sub in subs:
                sub.poll_due(now)
    elapsed = time.monotonic() - started
    server_cpu = cpu_seconds(server_pids) - server_cpu
    generator_cpu = time.process_time() - generator_cpu
    delivered = sum(s.count for s in subs)
    samples = sorted(x for s in subs for x in s.samples)
    total = sum(n for _, n in samples)
    p99 = 0.0
    seen = 0
    for latency, n in samples:
        seen += n
        if seen >= 0.99 * total:
            p99 = latency
            break
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    sel.close()
    return {
        "rate": delivered / elapsed,
        "p99_ms": p99 * 1000,
        "cpu_us": server_cpu / delivered * 1e6 if delivered else float("nan"),
        "generator": generator_cpu / elapsed,
    }


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--subscribers", default="1,10,100")
    parser.add_argument("--modes", default="kraken,kraken-batch,kraken-ws")
    parser.add_argument(
        "--vs", default="redis", choices=["redis", "kraken"],
        help="the baseline of the ratio columns (kraken: the single node, which then runs too)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1,
        help="rounds of (redis, then each mode); medians are printed, ratios paired per round",
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.subscribers.split(",")]
    modes = args.modes.split(",")
    if args.vs == "kraken" and "kraken" in modes:
        modes.remove("kraken")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # 10,000 subscribers need sockets
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        procs: list[subprocess.Popen[bytes]] = []
        ports: dict[str, Any] = {"pids": {}}
        if args.vs == "redis":
            redis_proc, redis_ports = start_redis(work)
            procs.append(redis_proc)
            ports.update(redis_ports)
            ports["pids"]["redis"] = [redis_proc.pid]
        if any(m in ("kraken-proxy3", "kraken-cluster3", "kraken-workers2") for m in modes):
            sys.path.insert(0, str(REPO))
            from kraken.core.certs import ensure_dev_pki

            ensure_dev_pki(work / "pki", {"pubsub": "pubsub"})
        kraken_proc, kraken_ports = start_kraken(work)
        procs.append(kraken_proc)
        ports.update(kraken_ports)
        for mode in ("kraken", "kraken-batch", "kraken-ws"):
            ports["pids"][mode] = [kraken_proc.pid]
        if "kraken-proxy3" in modes:
            tree, ports.setdefault("topologies", {})["kraken-proxy3"] = start_proxy_tree(work)
            procs += tree
            ports["pids"]["kraken-proxy3"] = [p.pid for p in tree]
        if "kraken-workers2" in modes:
            workers, ports.setdefault("topologies", {})["kraken-workers2"] = start_workers(work)
            procs += workers
            ports["pids"]["kraken-workers2"] = [p.pid for p in workers]
        if "kraken-cluster3" in modes:
            cluster, ports.setdefault("topologies", {})["kraken-cluster3"] = start_cluster(work)
            procs += cluster
            ports["pids"]["kraken-cluster3"] = [p.pid for p in cluster]
        base_mode = "redis" if args.vs == "redis" else "kraken"
        try:
            print(f"{PAYLOAD_SIZE}-byte messages, 1 publisher, {args.seconds:g} s per run, "
                  f"median of {args.repeat}\n")
            print(f"{'subs':>5} {'mode':<15} {'msgs/s':>11} {'p99 ms':>8} {'rate vs ' + base_mode:>15} "
                  f"{'p99 vs ' + base_mode:>14} {'srv us/msg':>10} {'cpu vs ' + base_mode:>14} "
                  f"{'gen cpu':>7}")
            for n in counts:
                results: dict[str, list[dict[str, float]]] = {m: [] for m in [base_mode, *modes]}
                for _ in range(args.repeat):
                    base = run(base_mode, ports, n, args.seconds)
                    results[base_mode].append({**base, "rate_ratio": 1.0, "p99_ratio": 1.0, "cpu_ratio": 1.0})
                    for mode in modes:
                        r = run(mode, ports, n, args.seconds)
                        r["rate_ratio"] = r["rate"] / base["rate"] if base["rate"] else float("inf")
                        r["p99_ratio"] = r["p99_ms"] / base["p99_ms"] if base["p99_ms"] else float("nan")
                        r["cpu_ratio"] = r["cpu_us"] / base["cpu_us"] if base["cpu_us"] else float("nan")
                        results[mode].append(r)
                for mode, rows in results.items():
                    def m(key: str, rows: list[dict[str, float]] = rows) -> float:
                        return median([row[key] for row in rows])

                    print(f"{n:>5} {mode:<15} {m('rate'):>11,.0f} {m('p99_ms'):>8.2f} "
                          f"{m('rate_ratio'):>15.2f} {m('p99_ratio'):>14.2f} {m('cpu_us'):>10.2f} "
                          f"{m('cpu_ratio'):>14.2f} {m('generator'):>7.0%}")
                sys.stdout.flush()
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
