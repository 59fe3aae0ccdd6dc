"""Proxy nodes as real twistd processes: a 3-level tree over mutual TLS, reference-counted
upstream subscriptions, failover to the second upstream, and the upstream's role checked."""

from __future__ import annotations

import contextlib
import io
import json
import re
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor

from kraken.cli.main import main as kraken_cli
from kraken.pubsub import wire
from kraken.pubsub.client import connect_client
from tests.integration.test_pubsub_server import Wire, pubsub_config
from tests.integration.test_pubsub_tls_push import open_push
from tests.support import ServerProcess


def start_node(
    servers: ServerProcess.Pool, pki: Path, *upstream: ServerProcess, role: str = "pubsub"
) -> ServerProcess:
    config = pubsub_config(pki)
    if role != "pubsub":
        config["tls"] = dict(config["tls"], cert=str(pki / f"{role}.pem"), key=str(pki / f"{role}.key"))
    if upstream:
        config["pubsub"]["upstream"] = [f"127.0.0.1:{u.port('memcached-tls')}" for u in upstream]
        config["pubsub"]["upstream_poll_interval"] = 0.005
    return servers.start("kraken-pubsub", config)


def admin(node: ServerProcess, path: str) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.port('admin')}{path}", timeout=5) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)


def subscribers(node: ServerProcess) -> dict[str, int]:
    return {t["topic"]: t["subscribers"] for t in admin(node, "/topics")["topics"]}


def wait_for(check: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def command(conn: Wire, data: bytes) -> wire.Reply:
    parser = wire.ReplyParser()
    conn.sock.sendall(data)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        conn.sock.settimeout(max(0.01, deadline - time.monotonic()))
        replies = parser.feed(conn.sock.recv(65536))
        if replies:
            assert len(replies) == 1
            return replies[0]
    raise AssertionError("no reply")


def poll_records(conn: Wire, count: int, timeout: float = 10) -> list[wire.Record]:
    got: list[wire.Record] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"got {got}, wanted {count} records"
        got += command(conn, b"get messages\r\n").records()
        time.sleep(0.01)
    return got


def test_three_level_tree_transcript_refcounts_and_no_echo(servers: ServerProcess.Pool, pki: Path) -> None:
    root = start_node(servers, pki)
    mid = start_node(servers, pki, root)
    leaf = start_node(servers, pki, mid)
    wait_for(lambda: admin(leaf, "/health")["status"] == "ok" and admin(mid, "/health")["status"] == "ok")
    a, a2, b = Wire(leaf.port("memcached")), Wire(leaf.port("memcached")), Wire(root.port("memcached"))
    assert a.send(b"set subscribe 0 0 13\r\ntopicA topicB\r\n", 8) == b"STORED\r\n"
    assert a2.send(b"set subscribe 0 0 6\r\ntopicA\r\n", 8) == b"STORED\r\n"
    # two leaf clients, one subscription at each level above
    wait_for(lambda: subscribers(root) == {"topicA": 1, "topicB": 1})
    assert subscribers(mid) == {"topicA": 1, "topicB": 1}
    assert subscribers(leaf) == {"topicA": 2, "topicB": 1}
    body = b"MESSAGE topicA 9\r\nhi there!\r\nMESSAGE topicA topicB topicC 3\r\nabc\r\n"
    assert b.send(b"set publish 0 0 66\r\n" + body + b"\r\n", 8) == b"STORED\r\n"
    wait_for(lambda: admin(leaf, "/status")["messages_in"] >= 3)
    # the spec's bytes, two hops away from the publisher
    assert a.send(b"get messages\r\n", 100) == (
        b"VALUE messages 0 73\r\nMESSAGE topicA 9\r\nhi there!\r\nMESSAGE topicA 3\r\nabc\r\n"
        b"MESSAGE topicB 3\r\nabc\r\nEND\r\n"
    )
    # a leaf publisher reaches the root and its neighbour, never itself
    assert b.send(b"set subscribe 0 0 6\r\ntopicA\r\n", 8) == b"STORED\r\n"
    assert command(a, wire.set_command(b"publish", wire.record([b"topicA"], b"up"))).kind == "STORED"
    assert poll_records(b, 1) == [([b"topicA"], b"up")]
    assert [r for r in poll_records(a2, 3) if r[1] == b"up"] == [([b"topicA"], b"up")]
    time.sleep(0.2)
    assert a.send(b"get messages\r\n", 5) == b"END\r\n"
    # the last local subscriber leaving unsubscribes upstream
    assert a.send(b"set unsubscribe 0 0 6\r\ntopicB\r\n", 8) == b"STORED\r\n"
    wait_for(lambda: subscribers(root) == {"topicA": 2})
    status = admin(leaf, "/status")
    assert status["role"] == "proxy" and status["upstream"]["connected"] is True
    assert status["upstream"]["peer"] == f"127.0.0.1:{mid.port('memcached-tls')}"
    url = f"http://127.0.0.1:{leaf.port('admin')}"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert kraken_cli(["pubsub", "--admin", url, "status"]) == 0
    pattern = (
        rf"Status: {url}\nRunning\nUpstream: 127\.0\.0\.1:{mid.port('memcached-tls')}, connected for "
        r"[0-9a-z ]+, lag [0-9.]+ s\n  holding 1 topics and 0 patterns, records in [0-9]+, out 1 "
        r"\(0 waiting\), failovers 0 \(0 could not replay\)\n"
    )
    assert re.fullmatch(pattern, out.getvalue()), out.getvalue()


def test_proxy_fails_over_and_resubscribes(servers: ServerProcess.Pool, pki: Path) -> None:
    first, second = start_node(servers, pki), start_node(servers, pki)
    proxy = start_node(servers, pki, first, second)
    c = Wire(proxy.port("memcached"))
    assert c.send(b"set psubscribe 0 0 6\r\nnews.>\r\n", 8) == b"STORED\r\n"
    assert c.send(b"set subscribe 0 0 7\r\nweather\r\n", 8) == b"STORED\r\n"
    wait_for(lambda: subscribers(first) == {"weather": 1} and admin(first, "/status")["patterns"] == 1)
    p1 = Wire(first.port("memcached"))
    assert command(p1, wire.set_command(b"publish", wire.record([b"news.a"], b"before"))).kind == "STORED"
    assert poll_records(c, 1) == [([b"news.a"], b"before")]
    first.kill()
    wait_for(lambda: subscribers(second) == {"weather": 1} and admin(second, "/status")["patterns"] == 1)
    p2 = Wire(second.port("memcached"))
    records = [([b"weather"], b"w%d" % i) for i in range(50)] + [([b"news.b.c"], b"after")]
    assert command(p2, wire.set_command(b"publish", wire.publish_body(records))).kind == "STORED"
    assert poll_records(c, 51) == records
    assert admin(proxy, "/status")["upstream"]["connections"] == 2


def test_proxy_refuses_an_upstream_without_the_pubsub_role(servers: ServerProcess.Pool, pki: Path) -> None:
    impostor = start_node(servers, pki, role="tracker")
    proxy = start_node(servers, pki, impostor)
    wait_for(lambda: "peer role 'tracker' is not one of: pubsub" in proxy.log())
    health = admin(proxy, "/health")
    assert health == {"status": "unhealthy", "failing": ["upstream"]}
    assert admin(proxy, "/status")["upstream"]["connected"] is False


def test_kill_an_upstream_mid_stream_clients_resume_without_gap_or_duplicate(
    servers: ServerProcess.Pool, pki: Path
) -> None:
    root = start_node(servers, pki)
    first, second = start_node(servers, pki, root), start_node(servers, pki, root)
    proxy = start_node(servers, pki, first, second)
    wait_for(lambda: admin(proxy, "/health")["status"] == "ok" and admin(second, "/health")["status"] == "ok")
    sub = Wire(proxy.port("memcached"))
    assert sub.send(b"set subscribe 0 0 6\r\nstream\r\n", 8) == b"STORED\r\n"
    wait_for(lambda: subscribers(root) == {"stream": 1})
    wait_for(lambda: admin(root, "/status")["uptime"] > 3)  # the failover replay reaches back 2 s
    publisher = Wire(root.port("memcached"))
    got: list[bytes] = []
    for i in range(400):
        body = wire.record([b"stream"], b"n%03d" % i)
        assert command(publisher, wire.set_command(b"publish", body)).kind == "STORED"
        if i % 20 == 0:
            got += [payload for _, payload in command(sub, b"get messages\r\n").records()]
        if i == 200:
            first.kill()  # records on their way through it are lost with it
        time.sleep(0.002)
    deadline = time.monotonic() + 10
    while len(got) < 400 and time.monotonic() < deadline:
        got += [payload for _, payload in command(sub, b"get messages\r\n").records()]
        time.sleep(0.05)
    assert got == [b"n%03d" % i for i in range(400)]
    status = admin(proxy, "/status")["upstream"]
    assert status["peer"] == f"127.0.0.1:{second.port('memcached-tls')}"
    assert status["failovers_resumed"] == 1 and status["failovers_not_found"] == 0


def test_a_frozen_upstream_is_dropped_and_the_next_one_used(servers: ServerProcess.Pool, pki: Path) -> None:
    first, second = start_node(servers, pki), start_node(servers, pki)
    config = pubsub_config(pki)
    config["pubsub"].update(
        upstream=[f"127.0.0.1:{u.port('memcached-tls')}" for u in (first, second)],
        upstream_poll_interval=0.005,
        upstream_timeout=1.5,
    )
    proxy = servers.start("kraken-pubsub", config)
    c = Wire(proxy.port("memcached"))
    assert c.send(b"set subscribe 0 0 1\r\nx\r\n", 8) == b"STORED\r\n"
    wait_for(lambda: subscribers(first) == {"x": 1})
    assert first.proc is not None
    first.send_signal(signal.SIGSTOP)  # alive, connected, silent
    try:
        wait_for(lambda: subscribers(second) == {"x": 1}, timeout=15)
        assert "has not answered for" in proxy.log()
        p = Wire(second.port("memcached"))
        assert command(p, wire.set_command(b"publish", wire.record([b"x"], b"via second"))).kind == "STORED"
        assert poll_records(c, 1) == [([b"x"], b"via second")]
    finally:
        first.send_signal(signal.SIGCONT)


@pytest_twisted.inlineCallbacks
def test_websocket_register_at_a_proxy_replays_from_the_upstream(
    servers: ServerProcess.Pool, pki: Path
) -> Any:
    root = start_node(servers, pki)
    proxy = start_node(servers, pki, root)
    wait_for(lambda: admin(proxy, "/health")["status"] == "ok")
    ws = yield open_push(proxy.port("websocket"))
    answer = yield ws.command(op="register")
    assert answer == {"ok": True, "op": "register", "found": True}  # after the upstream's position
    publisher = yield connect_client(reactor, "127.0.0.1", root.port("memcached"))
    yield publisher.publish([([b"fresh"], b"published at the root after the register")])
    answer = yield ws.command(op="subscribe", topics=["fresh"])
    assert answer == {"ok": True, "op": "subscribe", "found": True}
    assert (yield ws.frames.get()) == b"MESSAGE fresh 40\r\npublished at the root after the register\r\n"
    ws.sendClose()
    yield publisher.quit()
