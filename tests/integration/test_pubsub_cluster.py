"""A 3-node topic-sharded cluster as real twistd processes over mutual TLS: the worked
session against every node (a stock memcached client publishing), and a node killed
mid-stream while the others' clients keep receiving."""

from __future__ import annotations

import contextlib
import io
import re
import time
from pathlib import Path

from pymemcache.client.base import Client as Memcache

from kraken.cli.main import main as kraken_cli
from kraken.pubsub import wire
from kraken.pubsub.phash2 import shard_of
from tests.integration.test_pubsub_proxy import admin, command, poll_records, wait_for
from tests.integration.test_pubsub_server import Wire, pubsub_config
from tests.support import ServerProcess, free_ports

BODY = b"MESSAGE topicA 9\r\nhi there!\r\nMESSAGE topicA topicB topicC 3\r\nabc\r\n"


def start_cluster(servers: ServerProcess.Pool, pki: Path, size: int = 3) -> list[ServerProcess]:
    ports = free_ports(size)
    members = [f"127.0.0.1:{p}" for p in ports]
    nodes = []
    for port, me in zip(ports, members, strict=True):
        config = pubsub_config(pki)
        config["listen"] = ["tcp:0:interface=127.0.0.1", f"tls:tcp:{port}:interface=127.0.0.1"]
        config["pubsub"].update(cluster_self=me, cluster_members=members)
        config["pubsub"].update(cluster_health_interval=0.2, upstream_poll_interval=0.005)
        nodes.append(servers.start("kraken-pubsub", config))

    def all_healthy() -> bool:
        return all(all(m["healthy"] for m in admin(n, "/status")["cluster"]["members"]) for n in nodes)

    wait_for(all_healthy)
    return nodes


def topics_at(node: ServerProcess) -> set[str]:
    return {t["topic"] for t in admin(node, "/topics")["topics"]}


def test_worked_session_against_every_node(servers: ServerProcess.Pool, pki: Path) -> None:
    nodes = start_cluster(servers, pki)
    owners = [[m["owned_shards"] for m in admin(n, "/status")["cluster"]["members"]] for n in nodes]
    assert owners[0] == owners[1] == owners[2]
    assert sorted(s for shards in owners[0] for s in shards) == [0, 1, 2, 3]
    for i, node in enumerate(nodes):
        a = Wire(node.port("memcached"))
        assert a.send(b"set subscribe 0 0 13\r\ntopicA topicB\r\n", 8) == b"STORED\r\n"
        other = nodes[(i + 1) % 3]
        wait_for(lambda other=other: {"topicA", "topicB"} <= topics_at(other))
        stock = Memcache(("127.0.0.1", other.port("memcached")), default_noreply=False)
        assert stock.set("publish", BODY) is True
        expected = [([b"topicA"], b"hi there!"), ([b"topicA"], b"abc"), ([b"topicB"], b"abc")]
        got = poll_records(a, 3)
        assert got == expected
        assert a.send(b"get messages\r\n", 5) == b"END\r\n"
        stock.close()
        assert a.send(b"set unsubscribe 0 0 13\r\ntopicA topicB\r\n", 8) == b"STORED\r\n"


def test_kill_a_node_mid_stream_the_others_keep_receiving(servers: ServerProcess.Pool, pki: Path) -> None:
    nodes = start_cluster(servers, pki)
    owned = {m["node"]: m["owned_shards"] for m in admin(nodes[0], "/status")["cluster"]["members"]}
    names = [admin(n, "/status")["cluster"]["self"] for n in nodes]
    doomed = next(i for i, name in enumerate(names) if owned[name])  # a node that owns shards
    shards = owned[names[doomed]]
    topic = next(b"t%d" % i for i in range(1000) if shard_of(b"t%d" % i, 4) in shards)
    alive = [n for i, n in enumerate(nodes) if i != doomed]
    subs = [Wire(n.port("memcached")) for n in alive]
    for s in subs:
        assert s.send(wire.set_command(b"subscribe", topic), 8) == b"STORED\r\n"
    wait_for(lambda: all(topic.decode() in topics_at(n) for n in nodes))
    publisher = Wire(alive[0].port("memcached"))
    for i in range(20):
        publish = wire.set_command(b"publish", wire.record([topic], b"a%d" % i))
        assert command(publisher, publish).kind == "STORED"
    assert [p for _, p in poll_records(subs[1], 20)] == [b"a%d" % i for i in range(20)]
    nodes[doomed].kill()
    name = names[doomed]

    def moved() -> bool:
        members = [m for n in alive for m in admin(n, "/status")["cluster"]["members"] if m["node"] == name]
        return not any(m["healthy"] for m in members)

    wait_for(moved)
    for i in range(50):
        publish = wire.set_command(b"publish", wire.record([topic], b"b%d" % i))
        assert command(publisher, publish).kind == "STORED"
        time.sleep(0.002)
    assert [p for _, p in poll_records(subs[1], 50)] == [b"b%d" % i for i in range(50)]
    got0 = [p for _, p in poll_records(subs[0], 20)]
    assert got0[:20] == [b"a%d" % i for i in range(20)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert kraken_cli(["pubsub", "--admin", f"http://127.0.0.1:{alive[0].port('admin')}", "status"]) == 0
    text = out.getvalue()
    assert f"Cluster: 3 members, this node {names[nodes.index(alive[0])]}" in text
    assert re.search(rf"  {re.escape(name)}: DOWN; owns shards none\n", text), text


def test_two_processes_share_one_port_as_a_cluster(servers: ServerProcess.Pool, pki: Path) -> None:
    """Several cores: processes on one host bind the public port with SO_REUSEPORT (the kernel
    spreads connections over them) and form a cluster, so they behave as one server."""
    public, *peer_ports = free_ports(3)
    members = [f"127.0.0.1:{p}" for p in peer_ports]
    workers = []
    for port, me in zip(peer_ports, members, strict=True):
        config = pubsub_config(pki)
        shared = f"reuseport:tcp:{public}:interface=127.0.0.1"
        config["listen"] = [shared, f"tls:tcp:{port}:interface=127.0.0.1"]
        config["pubsub"].update(cluster_self=me, cluster_members=members, cluster_health_interval=0.2)
        workers.append(servers.start("kraken-pubsub", config))
    wait_for(lambda: all(m["healthy"] for w in workers for m in admin(w, "/status")["cluster"]["members"]))
    subs = [Wire(public) for _ in range(24)]
    for s in subs:
        assert s.send(b"set subscribe 0 0 4\r\nnews\r\n", 8) == b"STORED\r\n"
    spread = [admin(w, "/status")["connections"] for w in workers]
    assert all(n > 0 for n in spread) and sum(spread) >= 24, spread  # (+ the peers' links)
    wait_for(lambda: all("news" in topics_at(w) for w in workers))
    publisher = Wire(public)
    records = [([b"news"], b"n%d" % i) for i in range(30)]
    assert command(publisher, wire.set_command(b"publish", wire.publish_body(records))).kind == "STORED"
    for s in subs:
        assert poll_records(s, 30) == records


def test_workers_key_runs_processes_sharing_the_port(servers: ServerProcess.Pool, pki: Path) -> None:
    (public,) = free_ports(1)
    config = pubsub_config(pki)
    config["listen"] = [f"reuseport:tcp:{public}:interface=127.0.0.1"]
    config["pubsub"].update(workers=2, cluster_health_interval=0.2)
    parent = servers.start("kraken-pubsub", config)
    wait_for(lambda: len(admin(parent, "/status")["cluster"]["members"]) == 2)
    wait_for(lambda: all(m["healthy"] for m in admin(parent, "/status")["cluster"]["members"]))
    subs = [Wire(public) for _ in range(24)]
    for s in subs:
        assert s.send(b"set subscribe 0 0 4\r\nnews\r\n", 8) == b"STORED\r\n"
    # some connections went to the other worker: the parent holds fewer than all of them
    wait_for(lambda: "news" in topics_at(parent))
    assert 0 < admin(parent, "/status")["connections"] < 24 + 1
    time.sleep(0.5)  # the other worker's subscription reaches the parent
    publisher = Wire(public)
    records = [([b"news"], b"w%d" % i) for i in range(20)]
    assert command(publisher, wire.set_command(b"publish", wire.publish_body(records))).kind == "STORED"
    for s in subs:
        assert poll_records(s, 20) == records
    assert parent.proc is not None
    child_pids = [
        int(line.split("pid ")[1].rstrip(")"))
        for line in parent.log().splitlines()
        if "started pub/sub worker" in line
    ]
    assert len(child_pids) == 1
    parent.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{child_pids[0]}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{child_pids[0]}").exists()  # stopping worker 0 stopped the others
