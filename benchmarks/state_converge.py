"""kraken-state benchmark: how fast the engine converges many nodes, and how a parent copes with
many children.

Part 1: N simulated nodes (platform ``sim``) all at POWER_OFF get Cfg ``physState: POWER_ON,
runState: SYNC`` in one bulk update; we time until every Dsc matches (wall and CPU time of the
single engine thread), count events per second and RSS per node. Baseline, same run: the bare
stores applying exactly the same Dsc changes with no engine (the floor of the data layer).
Target: N=10,000 in under 10 s.

Part 2: C simulated children (real SyncClientService objects, each with its own certificate)
phone home to one parent over mutual TLS on loopback; we time until all are SYNC at the parent,
then a Cfg change on every child (busy: BUSY) until every child's Dsc has come back. Baseline,
same run: C bare mutual-TLS connections with the same certificates (the transport floor).

With ``--db`` the engine's Cfg is kept in SQLite as kraken-state keeps it (every Cfg change is
committed before it would be acknowledged), so part 1 includes the cost of durable writes, and
a third figure shows group commit: W Cfg writes acknowledged one by one (one commit each) against
W writes arriving in one reactor turn (one shared commit).

    .venv/bin/python benchmarks/state_converge.py [--nodes 10000] [--children 1000] [--db]
    .venv/bin/python benchmarks/state_converge.py --tree 3 --nodes 100000 [--submasters 4]

``--tree 3`` runs benchmarks/state_tree.py instead: a top, sub-masters and simulated nodes as
real processes, beside one kraken and bare sync-wire round trips.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, protocol, task
from twisted.logger import globalLogBeginner

from kraken.core import certs
from kraken.core.endpoints import connect, server_endpoint
from kraken.core.pending import PendingLimits
from kraken.core.tls import TLSSettings
from kraken.state.engine import Engine
from kraken.state.events import EventBus
from kraken.state.model import Busy, Node, PhysState, RunState
from kraken.state.modules.freebusy import FreeBusy
from kraken.state.modules.sim import SimPower
from kraken.state.service import StateService
from kraken.state.store import SqliteCfg, StateStore
from kraken.state.sync import SyncClientService, SyncServerFactory

ME = "00000000-0000-0000-0000-0000000000aa"
TARGET_SECONDS = 10.0


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def node_ids(n: int, prefix: str = "0001") -> list[str]:
    return [f"00000000-0000-0000-{prefix}-{i:012d}" for i in range(n)]


async def wait_until(reactor: Any, check: Any, timeout: float, step: float = 0.02) -> float:
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise RuntimeError("timed out")
        await task.deferLater(reactor, step, lambda: None)
    return time.perf_counter() - start


def baseline_stores(ids: list[str]) -> float:
    bus = EventBus()
    store = StateStore(bus)
    for i in ids:
        n = Node(i)
        n.platform, n.parent_id, n.phys_state = "sim", ME, PhysState.POWER_OFF
        store.create(n, n)
    t0 = time.perf_counter()
    for i in ids:
        store.set_values(i, [("/PhysState", PhysState.POWER_ON), ("/RunState", RunState.SYNC)])
    for i in ids:
        store.set_value(i, "/PhysState", PhysState.POWER_ON, dsc=True)
        store.set_value(i, "/RunState", RunState.SYNC, dsc=True)
    return time.perf_counter() - t0


async def converge(reactor: Any, n: int, db: Path | None = None) -> dict[str, float]:
    ids = node_ids(n)
    gc.collect()
    rss0 = rss_bytes()
    bus = EventBus()
    store = StateStore(bus)
    persist = SqliteCfg(db, store, reactor) if db is not None else None
    if persist is not None:
        persist.attach()
    sim = SimPower({"latency": 0.01, "timeout": 60})
    engine = Engine(store, bus, reactor, [sim], ME)
    engine.start_module("sim")
    for i in ids:
        node = Node(i)
        node.platform, node.parent_id, node.phys_state = "sim", ME, PhysState.POWER_OFF
        store.create(node)
    engine.thaw()
    await wait_until(reactor, lambda: all(store.dsc[i].phys_state is PhysState.POWER_OFF for i in ids), 120)
    events0, cpu0 = bus.emitted, time.process_time()
    t0 = time.perf_counter()
    for i in ids:
        store.set_values(i, [("/PhysState", PhysState.POWER_ON), ("/RunState", RunState.SYNC)])
    remaining = set(ids)

    def done() -> bool:
        for i in list(remaining):
            d = store.dsc[i]
            if d.phys_state is PhysState.POWER_ON and d.run_state is RunState.SYNC:
                remaining.discard(i)
        return not remaining

    await wait_until(reactor, done, 300, step=0.05)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    events = bus.emitted - events0
    rss = rss_bytes() - rss0
    engine.stop_modules()
    if persist is not None:
        await persist.close()
    return {"wall": wall, "cpu": cpu, "events": events, "rss_per_node": rss / n}


async def acknowledged_writes(reactor: Any, db: Path, w: int) -> dict[str, float]:
    store = StateStore(EventBus())
    persist = SqliteCfg(db, store, reactor)
    persist.attach()
    t0 = time.perf_counter()
    for i in node_ids(w, "0004"):
        store.create(Node(i))
        await persist.durable()
    one_by_one = time.perf_counter() - t0
    commits = persist.commits
    t1 = time.perf_counter()
    waits = []
    for i in node_ids(w, "0005"):
        store.create(Node(i))
        waits.append(persist.durable())
    await defer.gatherResults(waits)
    grouped = time.perf_counter() - t1
    await persist.close()
    grouped_commits = persist.commits - commits
    return {
        "one_by_one": one_by_one,
        "commits": commits,
        "grouped": grouped,
        "grouped_commits": grouped_commits,
    }


def make_children_pki(directory: Path, count: int) -> list[tuple[str, str]]:
    certs.ensure_dev_pki(directory, {"state": "state"})
    kids = []
    for i, node_id in enumerate(node_ids(count, "0002")):
        name = f"kid{i}"
        if not (directory / f"{name}.pem").exists():
            certs.issue(directory, name, "state")
        kids.append((name, node_id))
    return kids


def settings(pki: Path, name: str) -> TLSSettings:
    # Parent and children share one reactor here, so a child may not have sent its ClientHello
    # when the parent looks at it: no caps on pending handshakes (only the deadline).
    return TLSSettings(
        str(pki / "ca.pem"), str(pki / f"{name}.pem"), str(pki / f"{name}.key"),
        handshake=PendingLimits(timeout=60.0),
    )


class Idle(protocol.Protocol):
    pass


async def bare_tls(reactor: Any, pki: Path, kids: list[tuple[str, str]]) -> float:
    factory = protocol.Factory.forProtocol(Idle)
    endpoint, wrapped = server_endpoint(
        reactor, "tls:tcp:0:interface=127.0.0.1:backlog=2048", factory, settings(pki, "state"), ["state"]
    )
    port = await endpoint.listen(wrapped)
    t0 = time.perf_counter()
    client_factory = protocol.Factory.forProtocol(Idle)
    conns = await defer.gatherResults(
        [
            connect(reactor, "127.0.0.1", port.getHost().port, client_factory, settings(pki, name), ["state"])
            for name, _ in kids
        ]
    )
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.transport.loseConnection()
    await port.stopListening()
    return elapsed


async def children(reactor: Any, pki: Path, kids: list[tuple[str, str]]) -> dict[str, float]:
    parent = StateService([], reactor, self_id=ME)
    for name, node_id in kids:
        n = Node(node_id)
        n.nodename, n.parent_id, n.run_state = name, ME, RunState.SYNC
        parent.store.create(n)
    parent.startService()
    factory = SyncServerFactory(parent, reactor, hello=10.0, dead=40.0)
    endpoint, wrapped = server_endpoint(
        reactor, "tls:tcp:0:interface=127.0.0.1:backlog=2048", factory, settings(pki, "state"), ["state"]
    )
    port = await endpoint.listen(wrapped)
    sync_port = port.getHost().port
    clients = []
    t0 = time.perf_counter()
    for name, node_id in kids:
        child = StateService([FreeBusy()], reactor, self_id=node_id, full_state=False)
        child.startService()
        svc = SyncClientService(
            child, reactor, "127.0.0.1", sync_port, settings(pki, name), hello=10.0, dead=40.0
        )
        svc.startService()
        clients.append((child, svc))
    ids = [node_id for _, node_id in kids]
    phone_home = await wait_until(
        reactor, lambda: all(parent.store.dsc[i].run_state is RunState.SYNC for i in ids), 300, step=0.05
    )
    phone_home = time.perf_counter() - t0
    t1 = time.perf_counter()
    for i in ids:
        parent.store.set_value(i, "/Busy", Busy.BUSY)
    round_trip = await wait_until(
        reactor, lambda: all(parent.store.dsc[i].busy is Busy.BUSY for i in ids), 300, step=0.05
    )
    round_trip = time.perf_counter() - t1
    for child, svc in clients:
        svc.stopService()
        child.stopService()
    await port.stopListening()
    return {"phone_home": phone_home, "round_trip": round_trip}


async def main(reactor: Any, args: argparse.Namespace) -> None:
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    n = args.nodes
    print(f"== {n} simulated nodes, Cfg POWER_OFF -> POWER_ON + SYNC ==")
    base = baseline_stores(node_ids(n, "0003"))
    with tempfile.TemporaryDirectory() as tmp:
        r = await converge(reactor, n, Path(tmp) / "cfg.sqlite" if args.db else None)
    if args.db:
        print("Cfg kept in SQLite (--db)")
    if args.db and args.writes > 0:
        with tempfile.TemporaryDirectory() as tmp:
            a = await acknowledged_writes(reactor, Path(tmp) / "acks.sqlite", args.writes)
    print(f"engine converge time   {r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU (one thread)")
    print(f"events                 {r['events']:.0f} ({r['events'] / r['wall']:,.0f} events/s)")
    print(f"memory per node        {r['rss_per_node'] / 1024:.1f} KiB RSS (Cfg + Dsc + path)")
    print(f"baseline: bare stores  {base:.2f} s for the same Dsc changes without the engine")
    print(f"ratio engine/baseline  {r['wall'] / base:.1f}x")
    print(
        f"ratio vs target        {r['wall'] / TARGET_SECONDS:.2f} of the {TARGET_SECONDS:.0f} s target "
        f"({'met' if r['wall'] < TARGET_SECONDS else 'MISSED'})"
    )
    if args.db and args.writes > 0:
        w = args.writes
        print(
            f"acknowledged writes    {w} one by one: {a['one_by_one']:.2f} s ({w / a['one_by_one']:,.0f}/s, "
            f"{a['commits']:.0f} commits); {w} in one turn: {a['grouped']:.3f} s "
            f"({w / a['grouped']:,.0f}/s, {a['grouped_commits']:.0f} commit)"
        )
    if args.children <= 0:
        return
    c = args.children
    print(f"\n== {c} simulated children syncing with one parent (mutual TLS, loopback) ==")
    with tempfile.TemporaryDirectory() as tmp:
        pki = Path(tmp)
        t = time.perf_counter()
        kids = make_children_pki(pki, c)
        print(f"(issued {c} child certificates in {time.perf_counter() - t:.1f} s; not timed below)")
        floor = await bare_tls(reactor, pki, kids)
        s = await children(reactor, pki, kids)
    print(f"all children SYNC      {s['phone_home']:.2f} s (phone home of {c} children)")
    print(f"Cfg down + Dsc up      {s['round_trip']:.2f} s for a change on every child to come back")
    print(f"baseline: bare TLS     {floor:.2f} s for {c} mutual-TLS connections, same certificates")
    print(f"ratio phone-home/TLS   {s['phone_home'] / floor:.1f}x")
    print("original: a Cfg change waits for the next hello (10 s) each way; here it is pushed at once")
    print(f"peak RSS               {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--children", type=int, default=1_000)
    parser.add_argument("--db", action="store_true", help="keep Cfg in SQLite as kraken-state does")
    parser.add_argument("--writes", type=int, default=1000, help="acknowledged writes with --db (0: skip)")
    parser.add_argument("--tree", type=int, choices=[3], help="3: a tree of real processes (state_tree.py)")
    parser.add_argument("--submasters", type=int, default=4, help="sub-masters in the --tree run")
    parser.add_argument("--profile", type=Path, help="--tree: py-spy profiles of the top and one sub-master "
                        "while timed, written to this directory (speedscope)")
    args = parser.parse_args()
    if args.tree:
        from benchmarks.state_tree import main as tree_main

        task.react(
            lambda reactor: defer.ensureDeferred(
                tree_main(reactor, args.nodes, args.submasters, args.profile)
            )
        )
    else:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor, args)))
