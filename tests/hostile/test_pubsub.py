"""kraken-pubsub against hostile clients, as real twistd processes: subscription amplification,
idle connections holding every slot, pathological JSON at the admin API and the WebSocket."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kraken.pubsub import wire
from kraken.pubsub.admission import SILENT_GRACE
from tests.integration.test_pubsub_server import UPGRADE, Wire, pubsub_config
from tests.support import ServerProcess


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def admin_get(proc: ServerProcess, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.port('admin')}{path}", timeout=10) as r:
        return str(r.read().decode())


def metric(proc: ServerProcess, name: str) -> float:
    for line in admin_get(proc, "/metrics").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def subscriptions(proc: ServerProcess) -> int:
    return int(json.loads(admin_get(proc, "/status"))["subscriptions"])


def topics(prefix: str, count: int) -> bytes:
    return b" ".join(b"%s%06d" % (prefix.encode(), n) for n in range(count))


def subscribe(conn: Wire, names: bytes) -> bytes:
    """The reply line to ``set subscribe`` (STORED, or a SERVER_ERROR naming the limit)."""
    conn.sock.sendall(wire.set_command(b"subscribe", names))
    got = b""
    conn.sock.settimeout(60)
    while not got.endswith(b"\r\n"):
        chunk = conn.sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return got


# --- item 4: subscriptions are bounded -------------------------------------------------------


def test_six_huge_subscribes_on_one_connection_leave_memory_alone(
    servers: ServerProcess.Pool, pki: Path
) -> None:
    """Six 550k-topic subscribes took RSS from 344 to 1346 MiB; each is now refused whole."""
    proc = servers.start("kraken-pubsub", pubsub_config(pki))
    assert proc.proc is not None
    conn = Wire(proc.port("memcached"))
    before = rss_mib(proc.proc.pid)
    replies = [subscribe(conn, topics(f"{i}-", 550_000)) for i in range(6)]
    grown = rss_mib(proc.proc.pid) - before
    assert grown < 48, f"RSS grew by {grown:.0f} MiB"
    assert replies == [
        b"SERVER_ERROR subscribe names 550000 topics, over the limit of 10000 per command\r\n"
    ] * 6
    # nothing was subscribed, and the connection still serves
    assert subscriptions(proc) == 0
    assert subscribe(conn, b"a b") == b"STORED\r\n"
    assert conn.send(b"get messages\r\n", 5) == b"END\r\n"
    metrics = admin_get(proc, "/metrics")
    assert 'kraken_pubsub_refused_subscribes_total{limit="per_command"} 6.0' in metrics
    assert proc.log().count("refusing subscribe") == 1  # once per offender


def test_subscriptions_per_connection_and_server_wide_are_all_or_nothing(
    servers: ServerProcess.Pool, pki: Path
) -> None:
    proc = servers.start("kraken-pubsub", pubsub_config(pki, max_subscriptions=150_000))
    port = proc.port("memcached")
    a, b = Wire(port), Wire(port)
    for i in range(10):
        assert subscribe(a, topics(f"a{i}-", 10_000)) == b"STORED\r\n"
    # the 11th would pass 100,000 for this connection: refused whole, even its one fresh topic
    assert subscribe(a, b"a0-000000 fresh") == (
        b"SERVER_ERROR subscribe would give this connection 100001 subscriptions, "
        b"over the limit of 100000\r\n"
    )
    assert subscribe(a, b"a0-000000 a1-000001") == b"STORED\r\n"  # nothing new: allowed
    for i in range(5):
        assert subscribe(b, topics(f"b{i}-", 10_000)) == b"STORED\r\n"
    assert subscriptions(proc) == 150_000
    server_full = b"SERVER_ERROR the server is at its limit of 150000 subscriptions\r\n"
    assert subscribe(b, b"one more") == server_full
    retro = wire.set_command(b"retro_subscribe", b"0\r\none more")
    assert b.send(retro, len(server_full)) == server_full
    assert subscriptions(proc) == 150_000
    # room comes back when subscriptions go
    assert a.send(wire.set_command(b"unsubscribe", topics("a0-", 2)), 8) == b"STORED\r\n"
    assert subscribe(b, b"one more") == b"STORED\r\n"
    assert subscriptions(proc) == 150_000
    metrics = admin_get(proc, "/metrics")
    assert 'kraken_pubsub_refused_subscribes_total{limit="per_connection"} 1.0' in metrics
    assert 'kraken_pubsub_refused_subscribes_total{limit="server"} 2.0' in metrics


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """One masked client frame."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big") if n else b""
    return head + mask + masked


def ws_read(sock: socket.socket) -> bytes:
    """The payload of the next server frame (unmasked, not fragmented)."""

    def exact(count: int) -> bytes:
        got = b""
        while len(got) < count:
            chunk = sock.recv(count - len(got))
            if not chunk:
                raise ConnectionError("closed")
            got += chunk
        return got

    _, length = exact(2)
    if length == 126:
        length = int.from_bytes(exact(2), "big")
    elif length == 127:
        length = int.from_bytes(exact(8), "big")
    return exact(length)


def ws_open(proc: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proc.port("websocket")), timeout=20)
    sock.sendall(UPGRADE)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


def ws_command(sock: socket.socket, message: Any) -> dict[str, Any]:
    sock.sendall(ws_frame(message if isinstance(message, bytes) else json.dumps(message).encode()))
    answer: dict[str, Any] = json.loads(ws_read(sock))
    return answer


def test_websocket_subscriptions_have_the_same_limits(servers: ServerProcess.Pool, pki: Path) -> None:
    proc = servers.start("kraken-pubsub", pubsub_config(pki, max_subscriptions_per_connection=15_000))
    sock = ws_open(proc)
    names = [f"w{n}" for n in range(10_001)]
    assert ws_command(sock, {"op": "subscribe", "topics": names}) == {
        "ok": False,
        "error": "subscribe names 10001 topics, over the limit of 10000 per command",
    }
    assert ws_command(sock, {"op": "subscribe", "topics": names[:10_000]})["ok"] is True
    over = ws_command(sock, {"op": "retro_subscribe", "since": 0, "topics": [f"x{n}" for n in range(5001)]})
    assert over["ok"] is False and "over the limit of 15000" in over["error"]
    assert subscriptions(proc) == 10_000
    assert ws_command(sock, {"op": "subscribe", "topics": ["w1", "last"]})["ok"] is True
    sock.close()


# --- item 7: idle connections cannot lock everyone out ---------------------------------------


def connect_from(address: str, port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(address, 0))


def wait_for(check: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def round_trip(port: int) -> None:
    """A real client's visit: subscribe, another publishes, the first receives."""
    sub, pub = Wire(port), Wire(port)
    assert sub.send(b"set subscribe 0 0 5\r\nnews!\r\n", 8) == b"STORED\r\n"
    record = wire.record([b"news!"], b"still here")
    assert pub.send(wire.set_command(b"publish", record), 8) == b"STORED\r\n"
    want = wire.value_reply(record)
    assert sub.send(b"get messages\r\n", len(want)) == want


def test_a_thousand_silent_connections_do_not_lock_out_a_real_client(
    servers: ServerProcess.Pool, pki: Path
) -> None:
    """Defaults: 1,000 slots, 250 per address. The attacker fills every slot from four
    addresses and says nothing; a real client still gets in (a silent connection makes room)."""
    config = pubsub_config(pki)
    # the original's accept backlog (Twisted's default of 50 makes the attack itself slow)
    config["listen"] = ["tcp:0:interface=127.0.0.1:backlog=1024"]
    proc = servers.start("kraken-pubsub", config)
    port = proc.port("memcached")
    attackers = [connect_from(f"127.0.0.{2 + i // 250}", port) for i in range(1000)]
    wait_for(lambda: 'kraken_pubsub_connections{kind="memcached"} 1000.0' in admin_get(proc, "/metrics"))
    time.sleep(SILENT_GRACE)
    # a 251st connection from one address is refused at once, whatever the free slots
    extra = connect_from("127.0.0.2", port)
    extra.settimeout(10)
    assert extra.recv(100) == b"SERVER_ERROR Too many clients from this address\r\n"
    round_trip(port)
    metrics = admin_get(proc, "/metrics")
    assert "kraken_pubsub_evicted_connections_total 2.0" in metrics
    assert "kraken_pubsub_rejected_per_ip_total 1.0" in metrics
    assert proc.log().count("holds 250 memcached connections, the limit per address") == 1
    for sock in [*attackers, extra]:
        sock.close()


def ws_handshake(address: str, port: int) -> tuple[socket.socket, bytes]:
    sock = connect_from(address, port)
    sock.sendall(UPGRADE)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    return sock, head


def test_websocket_slots_have_a_per_address_cap_and_silent_clients_make_room(
    servers: ServerProcess.Pool, pki: Path
) -> None:
    config = pubsub_config(pki, max_websocket_clients=3, max_tcp_clients_per_ip=2)
    proc = servers.start("kraken-pubsub", config)
    port = proc.port("websocket")
    held = [ws_handshake(address, port) for address in ("127.0.0.2", "127.0.0.2", "127.0.0.3")]
    assert all(head.startswith(b"HTTP/1.1 101") for _, head in held)
    _, head = ws_handshake("127.0.0.2", port)
    assert head.startswith(b"HTTP/1.1 503")
    time.sleep(SILENT_GRACE)
    # full of clients that never sent a command: one makes room
    sock = ws_open(proc)
    assert ws_command(sock, {"op": "subscribe", "topics": ["a"]})["ok"] is True
    assert metric(proc, "kraken_pubsub_rejected_per_ip_total") == 1
    assert metric(proc, "kraken_pubsub_evicted_connections_total") == 1


def test_idle_connections_make_room_but_active_ones_keep_their_slot(
    servers: ServerProcess.Pool, pki: Path
) -> None:
    config = pubsub_config(pki, max_tcp_clients=20, evict_idle_after=1)
    proc = servers.start("kraken-pubsub", config)
    port = proc.port("memcached")
    poller = Wire(port)
    assert poller.send(b"set subscribe 0 0 5\r\nother\r\n", 8) == b"STORED\r\n"
    idle = [Wire(port) for _ in range(19)]
    for conn in idle:
        assert conn.send(b"get messages\r\n", 5) == b"END\r\n"
    # every slot holds a client that spoke within evict_idle_after: the newcomer is refused
    assert Wire(port).read(31) == b"SERVER_ERROR Too many clients\r\n"
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert poller.send(b"get messages\r\n", 5) == b"END\r\n"
        time.sleep(0.2)
    # the idle ones make room; the poller, active all along, is never chosen
    round_trip(port)
    newcomers = [Wire(port) for _ in range(10)]
    assert all(c.send(b"get messages\r\n", 5) == b"END\r\n" for c in newcomers)
    assert poller.send(b"get messages\r\n", 5) == b"END\r\n"
    # 12 newcomers, 2 of them into the slots round_trip's clients left
    assert 10 <= metric(proc, "kraken_pubsub_evicted_connections_total") <= 12
    assert metric(proc, "kraken_pubsub_rejected_connections_total") == 1


def test_a_connection_without_a_complete_command_has_a_short_timeout(
    servers: ServerProcess.Pool, pki: Path
) -> None:
    proc = servers.start("kraken-pubsub", pubsub_config(pki, first_command_timeout=1))
    port = proc.port("memcached")
    silent, slow, talker = Wire(port), Wire(port), Wire(port)
    assert talker.send(b"get messages\r\n", 5) == b"END\r\n"
    started = time.monotonic()
    with pytest.raises(OSError):  # a byte at a time does not extend it: the server closes
        for _ in range(20):
            slow.sock.sendall(b"g")
            time.sleep(0.2)
    assert silent.closed()
    assert time.monotonic() - started < 3
    assert talker.send(b"get messages\r\n", 5) == b"END\r\n"  # idle_timeout (3600 s) applies to it


# --- item 10: pathological JSON --------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"level": ' + b"9" * 5000 + b"}"],
    ids=["nested", "5000-digit-integer"],
)
def test_admin_api_answers_400_to_pathological_json(
    servers: ServerProcess.Pool, pki: Path, body: bytes
) -> None:
    proc = servers.start("kraken-pubsub", pubsub_config(pki))
    request = urllib.request.Request(
        f"http://127.0.0.1:{proc.port('admin')}/log-level", data=body, method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=10)
    assert e.value.code == 400
    assert json.loads(e.value.read())["error"]["code"] == "BAD_JSON"
    assert "Traceback" not in proc.log()


def test_websocket_answers_pathological_json_and_stays_open(servers: ServerProcess.Pool, pki: Path) -> None:
    proc = servers.start("kraken-pubsub", pubsub_config(pki))
    sock = ws_open(proc)
    assert ws_command(sock, b"[" * 100_000 + b"]" * 100_000)["ok"] is False
    big = b'{"op": "retro_subscribe", "since": ' + b"9" * 5000 + b', "topics": ["a"]}'
    assert ws_command(sock, big)["ok"] is False
    answer = ws_command(sock, {"op": "subscribe", "topics": ["a"]})
    assert answer == {"ok": True, "op": "subscribe", "found": True}
    assert "Traceback" not in proc.log()
