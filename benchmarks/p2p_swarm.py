"""P2P swarm benchmark: one origin and N agents, each in its own network namespace with capped links.

Needs root (ip netns, tc). Every host gets a veth into a shared bridge namespace; ``tc tbf`` caps
its upload (its own interface) and its download (its bridge port) to the same rate B. We time

  * ideal          S / B (one host's download link full the whole time),
  * http           all N agents fetching the blob straight from the origin over HTTPS,
  * kraken         all N agents fetching through ``kraken-agent`` (P2P),
  * bittorrent     aria2c + opentracker on the same topology (``--bittorrent``; apt-installs them),

and print efficiency = ideal / measured, and each time as a ratio to the ideal. Namespaces and
processes are removed on exit, on Ctrl-C and on SIGTERM.

    sudo .venv/bin/python benchmarks/p2p_swarm.py --size-mb 64 --agents 5 10 --rate-mbit 100
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
TWISTD = str(Path(PY).with_name("twistd"))

_namespaces: list[str] = []
_procs: list[subprocess.Popen[bytes]] = []


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def in_ns(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def cleanup() -> None:
    for proc in _procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in _procs:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    _procs.clear()
    for ns in reversed(_namespaces):
        sh("ip", "netns", "del", ns, check=False)
    _namespaces.clear()


def _on_signal(signum: int, frame: object) -> None:
    cleanup()
    sys.exit(128 + signum)


def add_host(index: int, ip: str, rate_mbit: int | None) -> str:
    ns = f"{TAG}h{index}"
    sh("ip", "netns", "add", ns)
    _namespaces.append(ns)
    host_if, br_if = f"v{TAG}{index}", f"b{TAG}{index}"
    sh("ip", "link", "add", host_if, "netns", ns, "type", "veth", "peer", "name", br_if, "netns", BRIDGE_NS)
    sh(*in_ns(ns, "ip", "link", "set", host_if, "name", "eth0"))
    sh(*in_ns(ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0"))
    sh(*in_ns(ns, "ip", "link", "set", "eth0", "up"))
    sh(*in_ns(ns, "ip", "link", "set", "lo", "up"))
    sh(*in_ns(BRIDGE_NS, "ip", "link", "set", br_if, "master", "br0"))
    sh(*in_ns(BRIDGE_NS, "ip", "link", "set", br_if, "up"))
    if rate_mbit:
        tbf = ["tbf", "rate", f"{rate_mbit}mbit", "burst", "64kb", "latency", "50ms"]
        sh(*in_ns(ns, "tc", "qdisc", "add", "dev", "eth0", "root", *tbf))  # upload
        sh(*in_ns(BRIDGE_NS, "tc", "qdisc", "add", "dev", br_if, "root", *tbf))  # download
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
    config = {**config, "port_file": str(work / "ports.json")}
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


def cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_parallel(commands: list[list[str]]) -> float:
    started = time.monotonic()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands]
    _procs.extend(procs)
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"download failed: {err.decode(errors='replace')[:500]}")
    return time.monotonic() - started


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
                "scheduler": {"pipeline_limit": PIPELINE[0]},
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
        http = timed_parallel([
            in_ns(ns, "curl", "-sf", "--cacert", str(pki / "ca.pem"), "--cert", f"{c}.pem",
                  "--key", f"{c}.key", "-o", "/dev/null", f"https://{ORIGIN_IP}:15002{url}")
            for ns in agent_ns
        ])
        cpu_before = sum(cpu_seconds(p) for p in agent_procs)
        kraken = timed_parallel([
            in_ns(ns, "curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:16000{url}") for ns in agent_ns
        ])
        cpu = (sum(cpu_seconds(p) for p in agent_procs) - cpu_before) / n
        metrics = subprocess.run(
            in_ns(origin_ns, "curl", "-sf", "--cacert", str(pki / "ca.pem"), "--cert", f"{c}.pem",
                  "--key", f"{c}.key", f"https://{ORIGIN_IP}:15002/metrics"),
            capture_output=True, text=True,
        ).stdout
        sent = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith("kraken_origin_piece_bytes_sent_total"))
        return {"http": http, "kraken": kraken, "origin_copies": sent / size, "agent_cpu": cpu}
    finally:
        cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--agents", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--rate-mbit", type=int, default=100)
    parser.add_argument("--pipeline", type=int, default=3, help="agents' pipeline_limit per agent peer")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) at the end")
    parser.add_argument("--piece-mb", type=float, default=4, help="origin piece length in MiB")
    args = parser.parse_args()
    PIECE_LENGTH[0] = int(args.piece_mb * 1024 * 1024)
    PIPELINE[0] = args.pipeline
    if os.geteuid() != 0:
        print("p2p_swarm: needs root (network namespaces and tc)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    atexit.register(cleanup)
    root = Path(tempfile.mkdtemp(prefix="kraken-p2p-bench-"))
    try:
        certs.ensure_dev_pki(root / "pki", {"client": "client"})
        size = args.size_mb * 1024 * 1024
        blob = root / "blob"
        with open(blob, "wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(1024 * 1024))
        digest = Digest.of_file(blob)
        ideal = size * 8 / (args.rate_mbit * 1e6)
        print(f"blob {args.size_mb} MiB ({args.piece_mb:g} MiB pieces), links {args.rate_mbit} Mbit/s"
              f" up and down; ideal S/B = {ideal:.2f}s")
        print(f"{'N':>3} {'http s':>8} {'kraken s':>9} {'http/ideal':>11} {'kraken/ideal':>13}"
              f" {'efficiency':>11} {'http/kraken':>12} {'origin copies':>14} {'agent cpu s':>12}")
        for n in args.agents:
            t = run_round(n, size, args.rate_mbit, root, blob, digest)
            h, k = t["http"], t["kraken"]
            print(f"{n:>3} {h:>8.2f} {k:>9.2f} {h / ideal:>11.2f} {k / ideal:>13.2f}"
                  f" {ideal / k:>10.0%} {h / k:>12.2f} {t['origin_copies']:>14.2f} {t['agent_cpu']:>12.2f}",
                  flush=True)
    finally:
        cleanup()
        if args.keep:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
