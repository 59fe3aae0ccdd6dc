"""P2P swarm benchmark: one origin and N agents, each in its own network namespace with capped links.

Needs root (ip netns, tc). Every host gets a veth into a shared bridge namespace; ``tc tbf`` caps
its upload and its download to the same rate B, both in the bridge namespace (the download on its
bridge port, the upload on an IFB device its bridge port's ingress is redirected to), as a
network would: a tbf on the host's own interface drops the host's packets locally, and Linux
aborts a connection whose window probes are all dropped locally 15 times in a row (every 0.5 s,
with no backoff and no RST to the peer: TCPAbortOnTimeout), which cut one origin download now
and then (the client only noticed at its keep-alive probe, 60 s later). We time

  * ideal          S / B (one host's download link full the whole time),
  * http           all N agents fetching the blob straight from the origin over HTTPS,
  * kraken         all N agents fetching through ``kraken-agent`` (P2P),
  * bittorrent     aria2c + opentracker on the same topology (``--bittorrent``; apt-installs them),

and print efficiency = ideal / measured, and each time as a ratio to the ideal. Namespaces and
processes are removed on exit, on Ctrl-C and on SIGTERM.

    sudo .venv/bin/python benchmarks/p2p_swarm.py --bittorrent          # 256 MiB, N = 5 10 20, 50 Mbit/s

All emulated hosts share this machine's cores: keep N x B within what it can move (on 2 cores,
about 1 Gbit/s of mutual-TLS piece traffic), or the figure measures the CPU, not the protocol.
The buckets are 256 KiB deep by default: with 64 KiB, tbf splits every GSO packet and the
emulated network alone takes most of the CPU. ``--mtu 9000`` gives every link jumbo frames:
framing then costs about 1 % of B instead of 4.5 %, for kraken and the baselines alike.
Every emulated host uses the TCP congestion control ``--cc`` (default cubic, Linux's own default),
whatever this machine's default is; the run adds it to the machine's allowed list if needed and
restores the list at the end.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kraken.core import certs  # noqa: E402
from kraken.core.digest import Digest  # noqa: E402

TAG = f"kb{os.getpid() % 100000}"
BRIDGE_NS = f"{TAG}br"
SUBNET = "10.250.0"
TRACKER_IP = f"{SUBNET}.254"
ORIGIN_IP = f"{SUBNET}.1"
PY = sys.executable
PIECE_LENGTH = [4 * 1024 * 1024]
PIPELINE = [3]
BITTORRENT = [False]
HTTP = [True]
LOG_LEVEL = ["info"]
BURST_KB = [256]
MTU = [1500]
CONGESTION = ["cubic"]
ALLOWED_CC = "/proc/sys/net/ipv4/tcp_allowed_congestion_control"
_allowed_cc_before: list[str] = []
ORIGIN_SCHEDULER: dict[str, object] = {}
AGENT_SCHEDULER: dict[str, object] = {}
TRACE = [False]
TWISTD = str(Path(PY).with_name("twistd"))

_namespaces: list[str] = []
_procs: list[subprocess.Popen[bytes]] = []


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def in_ns(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def stop_processes() -> None:
    for proc in _procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in _procs:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    _procs.clear()


def cleanup() -> None:
    stop_processes()
    for ns in reversed(_namespaces):
        sh("ip", "netns", "del", ns, check=False)
    _namespaces.clear()


def cleanup_all() -> None:
    """End of the run: also give the machine back the congestion controls it allowed."""
    cleanup()
    if _allowed_cc_before:
        Path(ALLOWED_CC).write_text(_allowed_cc_before.pop())


def allow_congestion_control(name: str) -> None:
    """A namespace may only default to a congestion control the machine allows: add *name*
    to the allowed list for the run (``cleanup_all`` puts the list back)."""
    allowed = Path(ALLOWED_CC).read_text().split()
    if name not in allowed:
        _allowed_cc_before.append(" ".join(allowed))
        Path(ALLOWED_CC).write_text(" ".join([*allowed, name]))


def _on_signal(signum: int, frame: object) -> None:
    cleanup_all()
    sys.exit(128 + signum)


def add_host(index: int, ip: str, rate_mbit: int | None) -> str:
    ns = f"{TAG}h{index}"
    sh("ip", "netns", "add", ns)
    _namespaces.append(ns)
    host_if, br_if = f"v{TAG}{index}", f"b{TAG}{index}"
    mtu = str(MTU[0])
    sh("ip", "link", "add", host_if, "mtu", mtu, "netns", ns, "type", "veth",
       "peer", "name", br_if, "mtu", mtu, "netns", BRIDGE_NS)
    sh(*in_ns(ns, "ip", "link", "set", host_if, "name", "eth0"))
    sh(*in_ns(ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0"))
    sh(*in_ns(ns, "ip", "link", "set", "eth0", "up"))
    sh(*in_ns(ns, "ip", "link", "set", "lo", "up"))
    sh(*in_ns(ns, "sysctl", "-qw", f"net.ipv4.tcp_congestion_control={CONGESTION[0]}"))
    sh(*in_ns(BRIDGE_NS, "ip", "link", "set", br_if, "master", "br0"))
    sh(*in_ns(BRIDGE_NS, "ip", "link", "set", br_if, "up"))
    if rate_mbit:
        tbf = ["tbf", "rate", f"{rate_mbit}mbit", "burst", f"{BURST_KB[0]}kb", "latency", "50ms"]
        sh(*in_ns(BRIDGE_NS, "tc", "qdisc", "add", "dev", br_if, "root", *tbf))  # download
        upload = f"i{TAG}{index}"
        sh(*in_ns(BRIDGE_NS, "ip", "link", "add", upload, "mtu", mtu, "type", "ifb"))
        sh(*in_ns(BRIDGE_NS, "ip", "link", "set", upload, "up"))
        sh(*in_ns(BRIDGE_NS, "tc", "qdisc", "add", "dev", upload, "root", *tbf))
        sh(*in_ns(BRIDGE_NS, "tc", "qdisc", "add", "dev", br_if, "handle", "ffff:", "ingress"))
        sh(*in_ns(BRIDGE_NS, "tc", "filter", "add", "dev", br_if, "parent", "ffff:", "protocol", "all",
                  "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", upload))
    return ns


def make_topology(n: int, rate: int) -> tuple[str, str, list[str]]:
    sh("ip", "netns", "add", BRIDGE_NS)
    _namespaces.append(BRIDGE_NS)
    sh(*in_ns(BRIDGE_NS, "ip", "link", "add", "br0", "type", "bridge"))
    sh(*in_ns(BRIDGE_NS, "ip", "link", "set", "br0", "up"))
    tracker_ns = add_host(254, TRACKER_IP, None)
    origin_ns = add_host(1, ORIGIN_IP, rate)
    agents = [add_host(10 + i, f"{SUBNET}.{10 + i}", rate) for i in range(n)]
    return tracker_ns, origin_ns, agents


def tls(pki: Path, name: str) -> dict[str, object]:
    return {"ca": str(pki / "ca.pem"), "cert": str(pki / f"{name}.pem"), "key": str(pki / f"{name}.key")}


def start(ns: str, plugin: str, config: dict[str, object], work: Path) -> subprocess.Popen[bytes]:
    work.mkdir(parents=True, exist_ok=True)
    config = {**config, "port_file": str(work / "ports.json"), "log": {"level": LOG_LEVEL[0]}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = open(work / "server.log", "wb")
    proc = subprocess.Popen(
        in_ns(ns, TWISTD, "--pidfile=", "-n", plugin, "--config", str(work / "config.yaml")),
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    _procs.append(proc)
    for _ in range(300):
        if (work / "ports.json").exists():
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"{plugin} in {ns} exited:\n{(work / 'server.log').read_text()}")
        time.sleep(0.05)
    raise RuntimeError(f"{plugin} in {ns} did not start")


def metric_sum(text: str, name: str) -> float:
    """Sum of every sample of *name* on a Prometheus /metrics page."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def port_counters() -> dict[str, tuple[int, int]]:
    """Bytes (into the bridge, out of the bridge) of every bridge port, read in one call."""
    counters = {}
    for line in sh(*in_ns(BRIDGE_NS, "cat", "/proc/net/dev")).stdout.splitlines():
        name, _, rest = line.strip().partition(":")
        if rest and name.startswith("b"):
            fields = rest.split()
            counters[name] = (int(fields[0]), int(fields[8]))
    return counters


class LinkTrace(threading.Thread):
    """Prints, about once a second, the origin's upload and the agents' rates (Mbit/s): mean
    download, and mean, lowest and median upload; at the end, what each agent uploaded in all.

    A host's upload is what its bridge port receives; its download is what the port sends.
    """

    def __init__(self, agents: int) -> None:
        super().__init__(daemon=True)
        self.origin = f"b{TAG}1"
        self.agents = [f"b{TAG}{10 + i}" for i in range(agents)]
        self.done = threading.Event()

    def run(self) -> None:
        started = last_t = time.monotonic()
        last = port_counters()
        while not self.done.wait(1.0):
            now_t, now = time.monotonic(), port_counters()
            dt = now_t - last_t
            up = (now[self.origin][0] - last[self.origin][0]) * 8 / 1e6 / dt
            down = sum(now[a][1] - last[a][1] for a in self.agents) * 8 / 1e6 / dt / len(self.agents)
            ups = sorted((now[a][0] - last[a][0]) * 8 / 1e6 / dt for a in self.agents)
            a_up = sum(ups) / len(ups)
            print(f"  t={now_t - started:5.1f}s origin up {up:6.1f} Mbit/s; each agent down {down:6.1f},"
                  f" up {a_up:6.1f} Mbit/s (min {ups[0]:5.1f}, median {ups[len(ups) // 2]:5.1f})", flush=True)
            last_t, last = now_t, now
        totals = port_counters()
        uploaded = " ".join(f"{totals[a][0] / 1e6:.0f}" for a in self.agents)
        print(f"  MB each agent uploaded: {uploaded}", flush=True)


def timed_parallel(commands: list[list[str]]) -> float:
    started = time.monotonic()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands]
    _procs.extend(procs)
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"download failed: {err.decode(errors='replace')[:500]}")
    return time.monotonic() - started


def bencode(value: object) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, str):
        return bencode(value.encode())
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(type(value))


def make_torrent(blob: Path, announce: str, piece_length: int) -> tuple[bytes, str]:
    pieces = []
    with open(blob, "rb") as f:
        while chunk := f.read(piece_length):
            pieces.append(hashlib.sha1(chunk).digest())
    info = {"length": blob.stat().st_size, "name": "blob", "piece length": piece_length,
            "pieces": b"".join(pieces)}
    return bencode({"announce": announce, "info": info}), hashlib.sha1(bencode(info)).hexdigest()


def bittorrent_round(work: Path, blob: Path, tracker_ns: str, origin_ns: str, agent_ns: list[str]) -> float:
    """aria2c leechers + one aria2c seeder on the origin host, opentracker on the tracker host."""
    work.mkdir(parents=True, exist_ok=True)
    for d in (work.parent, work):
        os.chmod(d, 0o755)
    torrent, info_hash = make_torrent(blob, f"http://{TRACKER_IP}:6969/announce", PIECE_LENGTH[0])
    (work / "blob.torrent").write_bytes(torrent)
    (work / "whitelist").write_text(info_hash + "\n")
    os.chmod(work / "whitelist", 0o644)
    tracker = subprocess.Popen(
        in_ns(tracker_ns, "opentracker", "-i", TRACKER_IP, "-p", "6969", "-P", "6969", "-u", "nobody",
              "-d", "/", "-w", str(work / "whitelist")),
        stdout=open(work / "opentracker.log", "wb"), stderr=subprocess.STDOUT,
    )
    _procs.append(tracker)
    hook = work / "on-complete.sh"  # aria2c keeps its .aria2 file while it seeds: mark completion instead
    hook.write_text('#!/bin/sh\ntouch "$3.done"\n')
    hook.chmod(0o755)
    common = ["aria2c", "--enable-dht=false", "--bt-enable-lpd=false", "--seed-ratio=0.0",
              f"--on-bt-download-complete={hook}", "--bt-tracker-interval=1", "--file-allocation=none",
              "--summary-interval=0",
              "--console-log-level=warn", "--bt-max-peers=55", str(work / "blob.torrent")]
    seed_dir = work / "seed"
    seed_dir.mkdir(exist_ok=True)
    shutil.copy(blob, seed_dir / "blob")
    _procs.append(subprocess.Popen(in_ns(origin_ns, *common[:-1], "--check-integrity=true",
                                         f"--dir={seed_dir}", f"--log={work / 'seed.log'}", common[-1]),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(3)  # the seeder hashes the file and announces before leechers start
    dirs = [work / f"leech{i}" for i in range(len(agent_ns))]
    started = time.monotonic()
    for ns, d in zip(agent_ns, dirs):
        d.mkdir(exist_ok=True)
        _procs.append(subprocess.Popen(in_ns(ns, *common[:-1], f"--dir={d}", f"--log={d}.log", common[-1]),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    pending = set(range(len(dirs)))
    deadline = started + 600
    while pending and time.monotonic() < deadline:
        for i in list(pending):
            if (dirs[i] / "blob.done").exists():
                pending.discard(i)
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    if pending:
        raise RuntimeError("bittorrent round did not finish in 10 minutes")
    return elapsed


def run_round(n: int, size: int, rate: int, root: Path, blob: Path, digest: Digest) -> dict[str, float]:
    pki = root / "pki"
    tracker_ns, origin_ns, agent_ns = make_topology(n, rate)
    try:
        certs.issue(pki, "origin", "origin", hosts=[ORIGIN_IP])
        certs.issue(pki, "tracker", "tracker", hosts=[TRACKER_IP])
        for i in range(n):
            certs.issue(pki, f"agent{i}", "agent", hosts=[f"{SUBNET}.{10 + i}"])
        start(origin_ns, "kraken-origin", {
            "listen": [f"tls:tcp:15002:interface={ORIGIN_IP}"], "tls": tls(pki, "origin"),
            "origin": {"store": str(root / f"n{n}" / "origin"),
                       "peer_listen": [f"tls:tcp:15003:interface={ORIGIN_IP}"],
                       "piece_lengths": {0: PIECE_LENGTH[0]}},
            "scheduler": ORIGIN_SCHEDULER,
        }, root / f"n{n}" / "origin-run")
        start(tracker_ns, "kraken-tracker", {
            "listen": [f"tls:tcp:15001:interface={TRACKER_IP}"], "tls": tls(pki, "tracker"),
            "tracker": {"origins": [f"{ORIGIN_IP}:15002"], "announce_interval": 1.0},
        }, root / f"n{n}" / "tracker-run")
        agent_procs = []
        for i, ns in enumerate(agent_ns):
            agent_procs.append(start(ns, "kraken-agent", {
                "listen": ["tcp:16000:interface=127.0.0.1"], "tls": tls(pki, f"agent{i}"),
                "agent": {"store": str(root / f"n{n}" / f"agent{i}"), "tracker": f"{TRACKER_IP}:15001",
                          "peer_listen": [f"tls:tcp:16001:interface={SUBNET}.{10 + i}"]},
                "registry": {"listen": []},
                "scheduler": {"pipeline_limit": PIPELINE[0], **AGENT_SCHEDULER},
            }, root / f"n{n}" / f"agent{i}-run"))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        push = subprocess.run(
            in_ns(origin_ns, PY, "-m", "kraken.cli.main", "blob", "push", str(blob), "--origin",
                  f"{ORIGIN_IP}:15002", "--pki", str(pki), "--namespace", "bench"),
            capture_output=True, text=True, env=env,
        )
        if push.returncode != 0:
            raise RuntimeError(push.stderr)
        url = f"/namespace/bench/blobs/{digest}"
        c = pki / "client"
        http = float("nan") if not HTTP[0] else timed_parallel([
            in_ns(ns, "curl", "-sSf", "--cacert", str(pki / "ca.pem"), "--cert", f"{c}.pem",
                  "--key", f"{c}.key", "-o", "/dev/null", f"https://{ORIGIN_IP}:15002{url}")
            for ns in agent_ns
        ])
        cpu_before = sum(cpu_seconds(p) for p in agent_procs)
        trace = LinkTrace(n) if TRACE[0] else None
        if trace is not None:
            trace.start()
        kraken = timed_parallel([
            in_ns(ns, "curl", "-sf", "-m", str(int(60 + 5 * size * 8 / (rate * 1e6))), "-o", "/dev/null",
                  f"http://127.0.0.1:16000{url}") for ns in agent_ns
        ])
        cpu = (sum(cpu_seconds(p) for p in agent_procs) - cpu_before) / n
        if trace is not None:
            trace.done.set()
            trace.join()
        metrics = subprocess.run(
            in_ns(origin_ns, "curl", "-sf", "--cacert", str(pki / "ca.pem"), "--cert", f"{c}.pem",
                  "--key", f"{c}.key", f"https://{ORIGIN_IP}:15002/metrics"),
            capture_output=True, text=True,
        ).stdout
        sent = metric_sum(metrics, "kraken_origin_piece_bytes_sent_total")
        duplicate = 0.0
        for ns in agent_ns:
            text = subprocess.run(in_ns(ns, "curl", "-sf", "http://127.0.0.1:16000/metrics"),
                                  capture_output=True, text=True).stdout
            duplicate += metric_sum(text, "kraken_agent_pieces_duplicate_total")
        pieces = -(-size // PIECE_LENGTH[0])
        result = {"http": http, "kraken": kraken, "origin_copies": sent / size, "agent_cpu": cpu,
                  "duplicates": duplicate / (pieces * n)}
        if BITTORRENT[0]:
            stop_processes()
            bt_dir = root / f"n{n}" / "bt"
            result["bittorrent"] = bittorrent_round(bt_dir, blob, tracker_ns, origin_ns, agent_ns)
        return result
    finally:
        cleanup()


CHAOS_ORIGINS = [f"{SUBNET}.{i}" for i in (1, 2, 3)]
CHAOS_TRACKERS = [f"{SUBNET}.{i}" for i in (254, 253)]


def _fetch_and_hash(agent_ns: list[str], url: str, timeout: int) -> tuple[float, list[str]]:
    """Every agent downloads *url* at once; the time until the last is done, and each body's SHA-256."""
    started = time.monotonic()
    procs = [subprocess.Popen(in_ns(ns, "sh", "-c", f"curl -sf -m {timeout} {url} | sha256sum"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for ns in agent_ns]
    _procs.extend(procs)
    hashes = []
    for p in procs:
        out, err = p.communicate()
        hashes.append(out.decode().split(" ")[0] if p.returncode == 0 else f"failed: {err.decode()[:200]}")
    return time.monotonic() - started, hashes


def chaos_round(
    n: int, size: int, rate: int, root: Path, blob: Path, digest: Digest, faults: bool
) -> dict[str, Any]:
    """Three origins (two owners per blob) and two trackers; with *faults*, the blob's first owner and
    its tracker are killed (-9) 2 s into the distribution."""
    from kraken.core.hashring import Ring

    sh("ip", "netns", "add", BRIDGE_NS)
    _namespaces.append(BRIDGE_NS)
    sh(*in_ns(BRIDGE_NS, "ip", "link", "add", "br0", "type", "bridge"))
    sh(*in_ns(BRIDGE_NS, "ip", "link", "set", "br0", "up"))
    run = root / f"chaos{n}{'f' if faults else ''}"
    pki = root / "pki"
    try:
        tracker_ns = [add_host(int(ip.rsplit(".", 1)[1]), ip, None) for ip in CHAOS_TRACKERS]
        origin_ns = [add_host(int(ip.rsplit(".", 1)[1]), ip, rate) for ip in CHAOS_ORIGINS]
        agent_ns = [add_host(10 + i, f"{SUBNET}.{10 + i}", rate) for i in range(n)]
        cluster = [f"{ip}:15002" for ip in CHAOS_ORIGINS]
        origins, trackers = [], []
        for i, (ns, ip) in enumerate(zip(origin_ns, CHAOS_ORIGINS)):
            certs.issue(pki, f"origin{i}", "origin", hosts=[ip])
            origins.append(start(ns, "kraken-origin", {
                "listen": [f"tls:tcp:15002:interface={ip}"], "tls": tls(pki, f"origin{i}"),
                "origin": {"store": str(run / f"origin{i}"), "peer_listen": [f"tls:tcp:15003:interface={ip}"],
                           "piece_lengths": {0: PIECE_LENGTH[0]}, "cluster": cluster,
                           "self_address": cluster[i], "max_replica": 2, "health_interval": 0.5,
                           "health_timeout": 1.0, "health_fails": 2},
                "scheduler": ORIGIN_SCHEDULER,
            }, run / f"origin{i}-run"))
        for i, (ns, ip) in enumerate(zip(tracker_ns, CHAOS_TRACKERS)):
            certs.issue(pki, f"tracker{i}", "tracker", hosts=[ip])
            trackers.append(start(ns, "kraken-tracker", {
                "listen": [f"tls:tcp:15001:interface={ip}"], "tls": tls(pki, f"tracker{i}"),
                "tracker": {"origins": cluster, "announce_interval": 1.0, "origin_cache_ttl": 2.0},
            }, run / f"tracker{i}-run"))
        for i, ns in enumerate(agent_ns):
            certs.issue(pki, f"agent{i}", "agent", hosts=[f"{SUBNET}.{10 + i}"])
            start(ns, "kraken-agent", {
                "listen": ["tcp:16000:interface=127.0.0.1"], "tls": tls(pki, f"agent{i}"),
                "agent": {"store": str(run / f"agent{i}"),
                          "trackers": [f"{ip}:15001" for ip in CHAOS_TRACKERS],
                          "peer_listen": [f"tls:tcp:16001:interface={SUBNET}.{10 + i}"]},
                "registry": {"listen": []},
                "scheduler": {"pipeline_limit": PIPELINE[0], "redial_after": 2.0, **AGENT_SCHEDULER},
            }, run / f"agent{i}-run")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        push = subprocess.run(
            in_ns(origin_ns[0], PY, "-m", "kraken.cli.main", "blob", "push", str(blob), "--origin",
                  cluster[0], "--pki", str(pki), "--namespace", "bench"),
            capture_output=True, text=True, env=env)
        if push.returncode != 0:
            raise RuntimeError(push.stderr)
        owners = Ring(cluster, 2).locations(digest.hex)
        c = pki / "client"
        second = owners[1].split(":")[0]
        local = f"https://{owners[1]}/internal/namespace/bench/blobs/{digest}?local=true"
        for _ in range(600):  # the second owner's copy has landed
            probe = in_ns(origin_ns[CHAOS_ORIGINS.index(second)], "curl", "-sfI", "--cacert",
                          str(pki / "ca.pem"), "--cert", f"{c}.pem", "--key", f"{c}.key", local)
            if subprocess.run(probe, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        victim_origin = origins[cluster.index(owners[0])]
        victim_tracker = trackers[[f"https://{ip}:15001" for ip in CHAOS_TRACKERS].index(
            Ring([f"https://{ip}:15001" for ip in CHAOS_TRACKERS], 1).ranked(digest.hex)[0])]
        killer = None
        if faults:
            def kill() -> None:
                victim_origin.kill()
                victim_tracker.kill()
            killer = threading.Timer(2.0, kill)
            killer.start()
        url = f"http://127.0.0.1:16000/namespace/bench/blobs/{digest}"
        took, hashes = _fetch_and_hash(agent_ns, url, int(120 + 5 * size * 8 / (rate * 1e6)))
        if killer is not None:
            killer.join()
        return {"time": took, "identical": sum(h == digest.hex for h in hashes), "hashes": hashes}
    finally:
        cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--agents", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--rate-mbit", type=int, default=50)
    parser.add_argument("--pipeline", type=int, default=3, help="agents' pipeline_limit per agent peer")
    parser.add_argument("--bittorrent", action="store_true", help="also time aria2c + opentracker")
    parser.add_argument("--no-http", action="store_true",
                        help="skip the all-from-the-origin HTTP baseline (it takes N*S/B)")
    parser.add_argument("--log-level", default="info", help="servers' log level (debug shows refusals)")
    parser.add_argument(
        "--workdir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
        help="where every host keeps its files (default: tmpfs, since all emulated hosts share one disk)",
    )
    parser.add_argument("--burst-kb", type=int, default=256, help="token bucket depth of every link's tbf")
    parser.add_argument("--origin-scheduler", nargs="*", default=[], metavar="KEY=YAML",
                        help="extra scheduler settings of the origin, e.g. super_seed_window=3")
    parser.add_argument("--agent-scheduler", nargs="*", default=[], metavar="KEY=YAML",
                        help="extra scheduler settings of every agent")
    parser.add_argument("--trace", action="store_true", help="print link rates every second")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) at the end")
    parser.add_argument("--mtu", type=int, default=1500, help="MTU of every emulated link")
    parser.add_argument("--piece-mb", type=float, default=0.5, help="origin piece length in MiB")
    parser.add_argument("--chaos", action="store_true",
                        help="three origins and two trackers: time the swarm without faults, then with the "
                             "blob's first owner and its tracker killed 2 s in")
    parser.add_argument("--cc", default="cubic",
                        help="TCP congestion control of every emulated host (default: Linux's own default)")
    args = parser.parse_args()
    PIECE_LENGTH[0] = int(args.piece_mb * 1024 * 1024)
    PIPELINE[0] = args.pipeline
    BITTORRENT[0] = args.bittorrent
    HTTP[0] = not args.no_http
    LOG_LEVEL[0] = args.log_level
    BURST_KB[0] = args.burst_kb
    MTU[0] = args.mtu
    TRACE[0] = args.trace
    CONGESTION[0] = args.cc
    for target, pairs in ((ORIGIN_SCHEDULER, args.origin_scheduler), (AGENT_SCHEDULER, args.agent_scheduler)):
        for pair in pairs:
            key, _, value = pair.partition("=")
            target[key] = yaml.safe_load(value)
    if args.bittorrent and not (shutil.which("aria2c") and shutil.which("opentracker")):
        packages = ["aria2", "opentracker"]
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages], check=True)
    if os.geteuid() != 0:
        print("p2p_swarm: needs root (network namespaces and tc)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    atexit.register(cleanup_all)
    allow_congestion_control(args.cc)
    root = Path(tempfile.mkdtemp(prefix="kraken-p2p-bench-", dir=args.workdir))
    os.chmod(root, 0o755)  # opentracker drops to nobody and must read its whitelist here
    try:
        certs.ensure_dev_pki(root / "pki", {"client": "client"})
        size = args.size_mb * 1024 * 1024
        blob = root / "blob"
        with open(blob, "wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(1024 * 1024))
        digest = Digest.of_file(blob)
        ideal = size * 8 / (args.rate_mbit * 1e6)
        if args.chaos:
            return chaos_table(args, size, ideal, root, blob, digest)
        print(f"blob {args.size_mb} MiB ({args.piece_mb:g} MiB pieces), links {args.rate_mbit} Mbit/s"
              f" up and down; ideal S/B = {ideal:.2f}s")
        print(f"{'N':>3} {'http s':>8} {'kraken s':>9} {'http/ideal':>11} {'kraken/ideal':>13}"
              f" {'efficiency':>11} {'http/kraken':>12} {'origin copies':>14} {'agent cpu s':>12}"
              f" {'dup pieces':>11} {'bt s':>7} {'bt/kraken':>10}")
        for n in args.agents:
            t = run_round(n, size, args.rate_mbit, root, blob, digest)
            h, k = t["http"], t["kraken"]
            print(f"{n:>3} {h:>8.2f} {k:>9.2f} {h / ideal:>11.2f} {k / ideal:>13.2f}"
                  f" {ideal / k:>10.0%} {h / k:>12.2f} {t['origin_copies']:>14.2f} {t['agent_cpu']:>12.2f}"
                  f" {t['duplicates']:>10.1%}"
                  + (f" {t['bittorrent']:>7.2f} {t['bittorrent'] / k:>10.2f}" if "bittorrent" in t else ""),
                  flush=True)
    finally:
        cleanup_all()
        if args.keep:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def chaos_table(
    args: argparse.Namespace, size: int, ideal: float, root: Path, blob: Path, digest: Digest
) -> int:
    print(f"blob {args.size_mb} MiB ({args.piece_mb:g} MiB pieces), links {args.rate_mbit} Mbit/s up and"
          f" down, 3 origins (2 owners), 2 trackers; ideal S/B = {ideal:.2f}s")
    print(f"{'N':>3} {'no faults s':>12} {'efficiency':>11} {'faults s':>9} {'efficiency':>11}"
          f" {'faults/no faults':>17} {'identical':>10}")
    worst = 0
    for n in args.agents:
        calm = chaos_round(n, size, args.rate_mbit, root, blob, digest, faults=False)
        hit = chaos_round(n, size, args.rate_mbit, root, blob, digest, faults=True)
        same = f"{calm['identical'] + hit['identical']}/{2 * n}"
        print(f"{n:>3} {calm['time']:>12.2f} {ideal / calm['time']:>10.0%} {hit['time']:>9.2f}"
              f" {ideal / hit['time']:>10.0%} {hit['time'] / calm['time']:>17.2f} {same:>10}", flush=True)
        for h in calm["hashes"] + hit["hashes"]:
            if h != digest.hex:
                print(f"    a download differs: {h}")
                worst = 1
    return worst


if __name__ == "__main__":
    sys.exit(main())
