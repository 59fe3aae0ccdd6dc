"""Pathological JSON at every JSON endpoint of kraken-state and kraken-tracker (real processes):
a 400 with the JSON error body over HTTP, an ERROR frame on the state sync port; never a 500 or a
dropped connection, and the server keeps serving."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from kraken.state.sync_wire import Decoder, Kind, Message
from tests.hostile.rig import call, https, huge_int, nested
from tests.integration.state_rig import state_config
from tests.support import ServerProcess, tls_section

N1 = "bbbbbbbb-0000-0000-0000-000000000001"
BODIES = {
    "nested 200": nested(200),
    "nested 900": nested(900),
    "nested 100000": nested(100_000),
    "5000 digits": huge_int(5000),
    "node with a 5000-digit value": b'{"id": "' + N1.encode() + b'", "nodename": ' + huge_int(5000) + b"}",
    "node with a nested value": b'{"id": "' + N1.encode() + b'", "nodename": ' + nested(5000) + b"}",
    "node list nested": b'{"nodes": [' + nested(5000) + b"]}",
}
STATE_WRITES = [
    ("POST", "/cfg/node"),
    ("POST", f"/cfg/node/{N1}"),
    ("PUT", "/cfg/node"),
    ("PUT", "/dsc/node"),
    ("POST", "/cfg/nodes"),
    ("PUT", "/cfg/nodes"),
    ("PUT", "/dsc/nodes"),
]


def assert_bad_json(status: int, body: Any, what: str) -> None:
    assert status == 400, (what, status, body)
    assert body["error"]["code"] in ("BAD_JSON", "BAD_NODE", "BAD_NODE_LIST"), (what, body)


@pytest.fixture
def state(pki: Path, tmp_path: Path, servers: ServerProcess.Pool) -> ServerProcess:
    return servers.start("kraken-state", state_config(pki, tmp_path, freeze=True), name="state")


def test_state_rest_answers_400_to_pathological_json(pki: Path, state: ServerProcess) -> None:
    port = state.port("http")
    call(pki, port, "POST", "/cfg/node", b'{"id": "' + N1.encode() + b'"}')
    for method, path in STATE_WRITES:
        for name, raw in BODIES.items():
            status, body = call(pki, port, method, path, raw)
            assert_bad_json(status, body, f"{method} {path} {name}")
    assert call(pki, port, "GET", f"/cfg/node/{N1}")[0] == 200
    assert "Traceback" not in state.log()


def sync_exchange(pki: Path, port: int, frame: bytes) -> list[Message | Any]:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with https(pki, "state").wrap_socket(raw, server_hostname="127.0.0.1") as conn:
        conn.sendall(frame)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except (ssl.SSLError, ConnectionResetError):
            pass
    return list(Decoder().feed(received))


@pytest.mark.parametrize("name", ["nested 900", "nested 100000", "5000 digits"])
def test_state_sync_answers_a_pathological_hello_with_an_error_frame(
    pki: Path, state: ServerProcess, name: str
) -> None:
    body = b'{"id": ' + BODIES[name] + b"}"
    frame = (len(body) + 1).to_bytes(4, "big") + bytes([Kind.HELLO]) + body
    answer = sync_exchange(pki, state.port("sync"), frame)
    assert len(answer) == 1 and isinstance(answer[0], Message), answer
    assert answer[0].kind is Kind.ERROR and "HELLO body" in answer[0].body["message"]


def test_tracker_announce_answers_400_to_pathological_json(pki: Path, servers: ServerProcess.Pool) -> None:
    config = {"listen": ["tls:tcp:0:interface=127.0.0.1"], "tls": tls_section(pki, "tracker"),
              "tracker": {"origins": []}}
    tracker = servers.start("kraken-tracker", config, name="tracker")
    info_hash = "ab" * 32
    peer = b'{"peer_id": "' + b"a" * 40 + b'", "ip": "127.0.0.1", "port": 7, "complete": false}'
    digest = b'"digest": "sha256:' + b"cd" * 32 + b'"'
    bodies = {
        **{k: v for k, v in BODIES.items() if not k.startswith("node")},
        "digest nested": b'{"digest": ' + nested(5000) + b', "peer": ' + peer + b"}",
        "peer_id nested": b"{" + digest + b', "peer": {"peer_id": ' + nested(900) + b"}}",
        "port of 5000 digits": b"{" + digest + b', "peer": '
        + peer.replace(b'"port": 7', b'"port": ' + huge_int(5000)) + b"}",
    }
    for name, raw in bodies.items():
        status, body = call(pki, tracker.port(), "POST", f"/announce/{info_hash}", raw, role="agent")
        assert status == 400, (name, status, body)
        assert body["error"]["code"] in ("BAD_JSON", "BAD_ANNOUNCE"), (name, body)
    assert "Traceback" not in tracker.log()
