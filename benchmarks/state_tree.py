"""kraken-state in a tree of real processes: one top, S sub-masters, N simulated nodes below them.

All N nodes (platform ``sim``) are in one group at the top; one bulk set there (POWER_ON + SYNC)
is timed by the top itself from the Cfg change to the last node's Dsc back at the top: Cfg
goes down in batches to the sub-masters, each drives its share with the ``sim`` module and
reports the Dsc back up in batches. Beside it, same run: the same N nodes on one kraken (no
tree), and bare sync-wire round trips (N nodes' Cfg down and Dsc back through the codec over
one mutual-TLS loopback connection, no engine, no stores). RSS of the top per node.

    .venv/bin/python benchmarks/state_converge.py --tree 3 --nodes 100000 [--submasters 4]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from twisted.internet import defer, protocol, task

from kraken.core import certs
from kraken.core.endpoints import connect, server_endpoint
from kraken.core.jsontext import compact
from kraken.core.pending import PendingLimits
from kraken.core.tls import TLSSettings
from kraken.state.client import ClientError, StateClient
from kraken.state.sync_wire import BATCH, Decoder, Kind, encode, encode_batches

REPO = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).with_name("twistd"))
TOP = "00000000-0000-0000-0000-0000000000aa"
TARGET_SECONDS = 10.0


def sub_id(i: int) -> str:
    return f"00000000-0000-0000-0005-{i:012d}"


def leaf_id(i: int) -> str:
    return f"00000000-0000-0000-0006-{i:012d}"


class Kraken:
    """One ``twistd -n kraken-state`` process."""

    def __init__(self, workdir: Path, pki: Path, cert: str, state: dict[str, Any]) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port_file = workdir / "ports.json"
        config = {
            "listen": ["tls:tcp:0:interface=127.0.0.1"],
            "tls": {"ca": str(pki / "ca.pem"), "cert": str(pki / f"{cert}.pem"),
                    "key": str(pki / f"{cert}.key"), "require_client_cert": True},
            "log": {"level": "warn"},
            "port_file": str(self.port_file),
            "state": {"ws_listen": ["tls:tcp:0:interface=127.0.0.1"],
                      "sync_listen": ["tls:tcp:0:interface=127.0.0.1:backlog=1024"],
                      "db": str(workdir / "cfg.sqlite"), **state},
        }
        (workdir / "config.yaml").write_text(yaml.safe_dump(config))
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, PYTHONPATH=path)
        self.log = open(workdir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [TWISTD, "--pidfile=", "-n", "kraken-state", "--config", str(workdir / "config.yaml")],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir, env=env,
        )
        deadline = time.monotonic() + 60
        while not self.port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (workdir / "server.log").read_text()[-2000:]
                raise RuntimeError(f"kraken-state did not start: {log}")
            time.sleep(0.05)
        self.ports = json.loads(self.port_file.read_text())
        self.api = StateClient(f"https://127.0.0.1:{self.ports['http']}", ca=str(pki / "ca.pem"),
                               cert=str(pki / "client.pem"), key=str(pki / "client.key"), timeout=600)

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def cpu(self) -> float:
        """CPU seconds (user + system) the process has used so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def _post_nodes(api: StateClient, nodes: list[dict[str, Any]]) -> None:
    for start in range(0, len(nodes), 20_000):
        api.post("/cfg/nodes", {"nodes": nodes[start : start + 20_000]})


def _bulk(api: StateClient, values: dict[str, str], timeout: float = 1800) -> dict[str, Any]:
    """Run a bulk set on group ``all``; the top times it itself (``seconds``), we only poll."""
    op = api.post("/group/all/set", {"values": values})["operation"]
    deadline = time.monotonic() + timeout
    while not op["complete"]:
        if time.monotonic() > deadline:
            raise RuntimeError(f"operation not complete after {timeout} s: {op}")
        time.sleep(1.0)  # each poll is a TLS handshake at the top: poll gently, it times itself
        try:
            op = api.get(f"/operation/{op['id']}")
        except ClientError as e:  # a server busy for seconds may cut a waiting poll: poll again
            print(f"(poll: {e})", file=sys.stderr)
    return dict(op)


def py_spy(proc: Kraken, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling one server until stopped (SIGINT), written as a speedscope profile."""
    spy = str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit(f"--profile needs py-spy beside {sys.executable}: pip install py-spy")
    command = [spy, "record", "--nonblocking", "--idle", "--format", "speedscope", "-o", str(out),
               "-p", str(proc.proc.pid)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_tree(pki: Path, tmp: Path, n: int, subs: int, profile: Path | None = None) -> dict[str, float]:
    sim = {"sim": {"latency": 0.01, "timeout": 120}}
    top = Kraken(tmp / "top", pki, "state", {"id": TOP, "modules": ["sim"], "module_config": sim})
    procs = [top]
    try:
        rss0 = top.rss()
        nodes: list[dict[str, Any]] = [
            {"id": sub_id(s), "nodename": f"sub{s}", "parentId": TOP, "runState": "SYNC"} for s in range(subs)
        ]
        leaves = [leaf_id(i) for i in range(n)]
        nodes += [
            {"id": leaf, "platform": "sim", "parentId": sub_id(i % subs)} for i, leaf in enumerate(leaves)
        ]
        _post_nodes(top.api, nodes)
        top.api.put("/group/all", {"nodes": leaves})
        for s in range(subs):
            procs.append(Kraken(tmp / f"sub{s}", pki, f"sub{s}", {
                "id": sub_id(s), "parent": f"127.0.0.1:{top.ports['sync']}", "submaster": True,
                "modules": ["sim"], "module_config": sim, "hello": 10, "dead": 120,
            }))
        _bulk(top.api, {"physState": "POWER_OFF"})  # every node known and off (not timed)
        spies = [py_spy(p, profile / f"{name}.speedscope.json")
                 for p, name in ((top, "top"), (procs[1], "sub0"))] if profile else []
        cpu0 = [p.cpu() for p in procs]
        op = _bulk(top.api, {"physState": "POWER_ON", "runState": "SYNC"})
        cpu = [p.cpu() - c for p, c in zip(procs, cpu0)]
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        return {"seconds": float(op["seconds"]), "rss_per_node": (top.rss() - rss0) / n,
                "top_cpu": cpu[0], "subs_cpu": sum(cpu[1:])}
    finally:
        for p in procs:
            p.stop()


def run_flat(pki: Path, tmp: Path, n: int) -> dict[str, float]:
    one = Kraken(tmp / "flat", pki, "state", {"id": TOP, "modules": ["sim"],
                                              "module_config": {"sim": {"latency": 0.01, "timeout": 120}}})
    try:
        rss0 = one.rss()
        leaves = [leaf_id(i) for i in range(n)]
        _post_nodes(one.api, [{"id": leaf, "platform": "sim", "parentId": TOP} for leaf in leaves])
        one.api.put("/group/all", {"nodes": leaves})
        _bulk(one.api, {"physState": "POWER_OFF"})
        cpu0 = one.cpu()
        op = _bulk(one.api, {"physState": "POWER_ON", "runState": "SYNC"})
        return {"seconds": float(op["seconds"]), "rss_per_node": (one.rss() - rss0) / n,
                "cpu": one.cpu() - cpu0}
    finally:
        one.stop()


class Echo(protocol.Protocol):
    """The far end of the bare round trip: each Cfg batch is answered with a Dsc batch."""

    def connectionMade(self) -> None:
        self.decoder = Decoder()

    def dataReceived(self, data: bytes) -> None:
        for m in self.decoder.feed(data):
            out = [dict(node, physState="POWER_ON", runState="SYNC") for node in m.body["nodes"]]
            self.transport.write(encode(Kind.DSC_NODES, {"nodes": out}))


class Sender(protocol.Protocol):
    def connectionMade(self) -> None:
        self.decoder = Decoder()
        self.received = 0
        self.done: defer.Deferred[None] = defer.Deferred()
        self.expected = 0

    def dataReceived(self, data: bytes) -> None:
        for m in self.decoder.feed(data):
            self.received += len(m.body["nodes"])
        if self.received >= self.expected and not self.done.called:
            self.done.callback(None)


async def bare_round_trips(reactor: Any, pki: Path, n: int) -> dict[str, float]:
    def settings(name: str) -> TLSSettings:
        return TLSSettings(str(pki / "ca.pem"), str(pki / f"{name}.pem"), str(pki / f"{name}.key"),
                           handshake=PendingLimits(timeout=60.0))

    echo = protocol.Factory.forProtocol(Echo)
    endpoint, wrapped = server_endpoint(
        reactor, "tls:tcp:0:interface=127.0.0.1", echo, settings("state"), ["state"]
    )
    port = await endpoint.listen(wrapped)
    sender = await connect(reactor, "127.0.0.1", port.getHost().port, protocol.Factory.forProtocol(Sender),
                           settings("sub0"), ["state"])
    nodes = [{"id": leaf_id(i), "nodename": "", "runState": "SYNC", "physState": "POWER_ON", "arch": "",
              "platform": "sim", "parentId": sub_id(0), "busy": "FREE"} for i in range(n)]
    raw = len(json.dumps(nodes[:BATCH], separators=(",", ":")))
    wire = len(encode_batches(Kind.CFG_NODES, [compact(node) for node in nodes[:BATCH]]))
    t0 = time.perf_counter()
    sender.expected = n
    sender.transport.write(encode_batches(Kind.CFG_NODES, [compact(node) for node in nodes]))
    await sender.done
    elapsed = time.perf_counter() - t0
    sender.transport.loseConnection()
    await port.stopListening()
    return {"seconds": elapsed, "compression": raw / wire}


def make_pki(directory: Path, subs: int) -> None:
    certs.ensure_dev_pki(directory, {"state": "state", "client": "client"})
    for s in range(subs):
        if not (directory / f"sub{s}.pem").exists():
            certs.issue(directory, f"sub{s}", "state")


async def main(reactor: Any, n: int, subs: int, profile: Path | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pki = tmp / "pki"
        make_pki(pki, subs)
        print(f"== {n} simulated nodes: one bulk Cfg change at the top until every Dsc is back there ==")
        bare = await bare_round_trips(reactor, pki, n)
        tree = await task.deferLater(reactor, 0, run_tree, pki, tmp, n, subs, profile)
        flat = await task.deferLater(reactor, 0, run_flat, pki, tmp, n)
    print(f"3-level tree            {tree['seconds']:.2f} s (top, {subs} sub-masters, {n} nodes below them)")
    print(f"  CPU while timed       top {tree['top_cpu']:.1f} s, sub-masters {tree['subs_cpu']:.1f} s in all "
          f"(polls included)")
    print(f"one kraken, same nodes  {flat['seconds']:.2f} s ({flat['cpu']:.1f} s CPU)")
    print(f"bare sync-wire trips    {bare['seconds']:.2f} s ({n} nodes' Cfg down and Dsc back, codec + TLS)")
    print(f"ratio tree/one kraken   {tree['seconds'] / flat['seconds']:.2f}x")
    print(f"ratio tree/bare wire    {tree['seconds'] / bare['seconds']:.1f}x")
    print(f"wire compression        {bare['compression']:.1f}x on a batch of {BATCH} nodes")
    print(f"top RSS per node        {tree['rss_per_node'] / 1024:.1f} KiB (tree), "
          f"{flat['rss_per_node'] / 1024:.1f} KiB (one kraken)")
    verdict = "met" if tree["seconds"] < TARGET_SECONDS else "MISSED"
    print(f"load average            {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores")
    print(f"ratio vs target         {tree['seconds'] / TARGET_SECONDS:.2f} of the "
          f"{TARGET_SECONDS:.0f} s target ({verdict})")
