"""kraken-pubsub as a real twistd process: byte transcripts, pymemcache, limits, admin CLI."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pymemcache.client.base import Client as Memcache

from kraken.cli.main import main as kraken_cli
from kraken.pubsub import wire
from tests.support import ServerProcess, tls_section

LOCAL = "tcp:0:interface=127.0.0.1"


def pubsub_config(pki: Path, **pubsub: Any) -> dict[str, Any]:
    return {
        "listen": [LOCAL, "tls:" + LOCAL],
        "tls": tls_section(pki, "pubsub"),
        "pubsub": {"websocket_listen": [LOCAL], "admin_listen": [LOCAL], **pubsub},
    }


class Wire:
    """A blocking socket that reads what the server sends within a short time."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)

    def send(self, data: bytes, expect: int | None = None) -> bytes:
        if data:
            self.sock.sendall(data)
        return self.read(expect)

    def read(self, expect: int | None = None) -> bytes:
        got = b""
        deadline = time.monotonic() + (5 if expect else 0.3)
        while time.monotonic() < deadline and (expect is None or len(got) < expect):
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            got += chunk
        return got

    def closed(self) -> bool:
        self.sock.settimeout(5)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


@pytest.fixture
def server(servers: ServerProcess.Pool, pki: Path) -> ServerProcess:
    return servers.start("kraken-pubsub", pubsub_config(pki, max_tcp_clients=5))


def test_worked_session_over_tcp(server: ServerProcess) -> None:
    a, b = Wire(server.port("memcached")), Wire(server.port("memcached"))
    assert a.send(b"get messages\r\n", 5) == b"END\r\n"
    assert a.send(b"set subscribe 0 0 13\r\ntopicA topicB\r\n", 8) == b"STORED\r\n"
    body = b"MESSAGE topicA 9\r\nhi there!\r\nMESSAGE topicA topicB topicC 3\r\nabc\r\n"
    # the header and the data in separate segments, as the Node client sends them
    assert b.send(b"set publish 0 0 66") == b""
    assert b.send(b"\r\n" + body + b"\r\n", 8) == b"STORED\r\n"
    assert b.send(b"get messages\r\n", 5) == b"END\r\n"
    reply = (
        b"VALUE messages 0 73\r\nMESSAGE topicA 9\r\nhi there!\r\nMESSAGE topicA 3\r\nabc\r\n"
        b"MESSAGE topicB 3\r\nabc\r\nEND\r\n"
    )
    assert a.send(b"get messages\r\n", len(reply)) == reply
    assert a.send(b"quit\r\n") == b""
    assert a.closed()
    assert b.send(b"set foo 0 0 3\r\nabc\r\n", 7) == b"ERROR\r\n"
    assert b.closed()


def test_pymemcache_drives_subscribe_publish_and_get(server: ServerProcess) -> None:
    port = server.port("memcached")
    sub = Memcache(("127.0.0.1", port), default_noreply=False, connect_timeout=5, timeout=5)
    pub = Memcache(("127.0.0.1", port), default_noreply=False, connect_timeout=5, timeout=5)
    assert sub.get("messages") is None
    assert sub.set("subscribe", b"foo t1") is True
    body = wire.publish_body([([b"foo"], b"hello \r\n world"), ([b"t1", b"foo"], b"goal")])
    assert pub.set("publish", body) is True
    value = sub.get("messages")
    assert value is not None
    # the value excludes the last record's CRLF (spec 2.4)
    assert wire.parse_publish(value + b"\r\n") == [
        ([b"foo"], b"hello \r\n world"),
        ([b"t1", b"foo"], b"goal"),  # t1 and foo share shard 0
    ]
    assert pub.get("messages") is None
    assert sub.set("unsubscribe", b"t1") is True
    assert pub.set("publish", wire.publish_body([([b"t1"], b"x")])) is True
    assert sub.get("messages") is None
    sub.close()
    pub.close()


def test_max_clients_and_admin_cli(server: ServerProcess) -> None:
    conns = [Wire(server.port("memcached")) for _ in range(5)]
    conns[0].send(wire.set_command(b"subscribe", b"alpha beta"), 8)
    conns[1].send(wire.set_command(b"subscribe", b"alpha"), 8)
    for conn in conns[2:]:  # all five spoke within evict_idle_after: none makes room
        conn.send(b"get messages\r\n", 5)
    extra = Wire(server.port("memcached"))
    assert extra.read(31) == b"SERVER_ERROR Too many clients\r\n"
    assert extra.closed()
    admin = f"http://127.0.0.1:{server.port('admin')}"

    def cli(*args: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = kraken_cli(["pubsub", "--admin", admin, *args])
        return code, out.getvalue()

    assert cli("status") == (0, f"Status: {admin}\nRunning\n")
    assert cli("dump-topics") == (0, "alpha\t2\nbeta\t1\n")
    code, text = cli("--json", "dump-queues")
    queues = json.loads(text)["queues"]
    assert code == 0 and len(queues) == 5
    first = min(q["id"] for q in queues)
    code, text = cli("dump-queues")
    assert text.startswith("5 Waitresses:\n\n")
    assert f"Waitress {first}, subscriptions: 2, status: [{{name,<<\"127.0.0.1:" in text
    assert cli("dump-queue-topics", str(first)) == (0, f"Waitress {first}, topics: \nalpha\nbeta\n")
    assert cli("dump-queue-topics", "999")[0] == 1
    assert cli("log-level", "debug") == (0, f"Changed log level for {admin} to debug\n")
    assert json.loads(cli("--json", "status")[1])["log_level"] == "debug"
    with urllib.request.urlopen(admin + "/health") as r:
        assert json.loads(r.read()) == {"status": "ok"}
    with urllib.request.urlopen(admin + "/metrics") as r:
        metrics = r.read().decode()
    assert 'kraken_pubsub_connections{kind="memcached"} 5.0' in metrics
    assert "kraken_pubsub_rejected_connections_total 1.0" in metrics
    server.stop()
    code, text = cli("status")
    assert code == 1 and "Not running" in text


UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: a3Jha2VuIHB1c2ggdGVzdA==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def dropped_within(conn: Wire, seconds: float) -> bool:
    """True once the server closes *conn* (whatever frames come first), False after *seconds*."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        conn.sock.settimeout(left)
        try:
            if not conn.sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def test_websocket_clients_are_limited_and_silent_ones_dropped(
    servers: ServerProcess.Pool, pki: Path
) -> None:
    config = pubsub_config(
        pki, max_websocket_clients=1, websocket_ping_interval=1, websocket_ping_timeout=1
    )
    proc = servers.start("kraken-pubsub", config)
    port = proc.port("websocket")
    silent = Wire(port)
    assert silent.send(UPGRADE, 12).startswith(b"HTTP/1.1 101")
    refused = Wire(port)
    assert refused.send(UPGRADE, 12).startswith(b"HTTP/1.1 503")
    assert dropped_within(refused, 5)
    # The first client never answers a ping: it is dropped and its place is free again.
    assert dropped_within(silent, 5)
    later = Wire(port)
    assert later.send(UPGRADE, 12).startswith(b"HTTP/1.1 101")
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.port('admin')}/metrics") as r:
        assert "kraken_pubsub_rejected_connections_total 1.0" in r.read().decode()


def test_200_misbehaving_sockets_do_not_disturb_a_subscriber(servers: ServerProcess.Pool, pki: Path) -> None:
    import random

    proc = servers.start("kraken-pubsub", pubsub_config(pki, max_tcp_clients=300))
    port = proc.port("memcached")
    rng = random.Random(7)
    good, pub = Wire(port), Wire(port)
    assert good.send(b"set subscribe 0 0 1\r\nt\r\n", 8) == b"STORED\r\n"
    junk = [
        b"get foo\r\n", b"set subscribe 0 0 9\r\nt", b"\xff\x00garbage\n", b"set publish 0 0 3\r\nabc\r\n",
        b"set subscribe 0 0 1\r\nt\r\n", b"set retro_subscribe 0 0 1\r\nx\r\n", b"stats\r\n",
    ]
    chaos = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(200)]
    expected = []
    for i, sock in enumerate(chaos):
        noise = bytes(rng.randrange(256) for _ in range(20))
        sock.sendall(b"".join(rng.choice(junk) for _ in range(3)) + noise)
        if i % 2 == 0:
            record = wire.record([b"t"], b"message %d" % i)
            expected.append(record)
            assert pub.send(wire.set_command(b"publish", record), 8) == b"STORED\r\n"
    want = wire.value_reply(b"".join(expected))
    assert good.send(b"get messages\r\n", len(want)) == want
    for sock in chaos:
        sock.close()
    assert "Traceback" not in proc.log()
