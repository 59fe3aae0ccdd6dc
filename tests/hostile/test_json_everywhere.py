"""Pathological JSON wherever a kraken component reads JSON that another party wrote (real
processes): registry manifests pushed by clients, answers of origins, trackers and build-indexes
to the components that call them, commands on the state websocket, server answers read by the
``kraken`` command. Each gets the protocol's error (``400 MANIFEST_INVALID``, a 502, a message
on the socket, an exit code), never a 500, a traceback or a dropped connection, and the reader
keeps working."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kraken.core.digest import Digest
from kraken.p2p.metainfo import MetaInfo
from tests import support
from tests.hostile.rig import call, https, huge_int, nested
from tests.hostile.test_pipeline import Listener, http_service
from tests.hostile.test_pipeline import config as pipeline_config
from tests.hostile.test_pubsub import ws_frame, ws_read
from tests.integration.p2p_fixtures import agent_config, origin_config, tracker_config
from tests.integration.pipeline_http import Http
from tests.integration.registry_http import Registry
from tests.integration.registry_support import build_index_config
from tests.integration.state_rig import state_config
from tests.integration.test_pubsub_server import UPGRADE
from tests.support import ServerProcess, tls_section

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REPO = "hostile/json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(data: bytes) -> bytes:
    fields = {"mediaType": "application/octet-stream", "digest": sha256(data), "size": len(data)}
    return json.dumps(fields).encode()


def manifest_bodies(config: bytes) -> dict[str, bytes]:
    """Manifests that a lenient reader would take or choke on, around a valid *config* descriptor."""
    head = b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'", "config": '
    head += descriptor(config)
    return {
        "nested 900 in annotations": head + b', "layers": [], "annotations": ' + nested(900) + b"}",
        "nested 100000": head + b', "layers": ' + nested(100_000) + b"}",
        "bare nested 100000": nested(100_000),
        "5000-digit size": head.replace(b'"size": ' + str(len(config)).encode(), b'"size": ' + huge_int(5000))
        + b', "layers": []}',
        "size over int64": head.replace(b'"size": ' + str(len(config)).encode(), b'"size": ' + huge_int(30))
        + b', "layers": []}',
        "NaN": head + b', "layers": [], "annotations": {"x": NaN}}',
        "-Infinity schemaVersion": head.replace(b'"schemaVersion": 2', b'"schemaVersion": -Infinity')
        + b', "layers": []}',
        "duplicate layers key": head + b', "layers": [], "layers": [' + descriptor(b"other") + b"]}",
        "invalid UTF-8": head + b', "layers": [], "annotations": {"x": "\xff\xfe"}}',
        "UTF-8 surrogate": head + b', "layers": [], "annotations": {"x": "\xed\xa0\x80"}}',
    }


# Answers a lenient reader would take or choke on; each must be refused as a whole.
ANSWERS = {
    "nested 900": nested(900),
    "nested 100000": nested(100_000),
    "5000 digits": huge_int(5000),
    "NaN": b'{"x": NaN}',
    "not UTF-8": b'{"x": "\xff"}',
    "a list": b"[]",
    "fields nested": b'{"peer_id": ' + nested(900) + b', "ip": ' + nested(900) + b', "port": ' + nested(900)
    + b', "peers": [' + nested(900) + b'], "result": [' + nested(900) + b"]}",
    "fields of the wrong type": b'{"peer_id": 7, "ip": [], "port": "x", "name": {}, "length": "1",'
    b' "peers": [{"peer_id": "zz", "ip": 1, "port": "7", "origin": 0, "complete": 0}], "interval": "x",'
    b' "result": [1, 2], "next_offset": []}',
    "a peer of the wrong type": b'{"peers": [{"peer_id": "' + b"ab" * 20 + b'", "ip": [], "port": 7,'
    b' "origin": false, "complete": true}], "interval": 1}',
    "empty": b"",
}

NOT_JSON = {"nested 900", "nested 100000", "5000 digits", "NaN", "not UTF-8", "fields nested", "nodes nested"}

Handler = Callable[[str, str], tuple[int, dict[str, str], bytes]]


class FakePeer:
    """An HTTPS server with a kraken role's certificate that asks for client certificates (like
    every kraken server) and answers whatever *handler(method, path)* returns."""

    def __init__(self, pki: Path | None, role: str, handler: Handler, client_cert: bool = True) -> None:
        self.requests: list[str] = []
        peer = self

        class Answer(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                peer.requests.append(f"{self.command} {self.path}")
                status, headers, body = handler(self.command, self.path)
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        if pki is not None:  # else plain HTTP
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(pki / f"{role}.pem"), str(pki / f"{role}.key"))
            context.load_verify_locations(str(pki / "ca.pem"))
            context.verify_mode = ssl.CERT_REQUIRED if client_cert else ssl.CERT_NONE
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fakes() -> Iterator[Callable[..., FakePeer]]:
    started: list[FakePeer] = []

    def start(pki: Path | None, role: str, handler: Handler, client_cert: bool = True) -> FakePeer:
        started.append(FakePeer(pki, role, handler, client_cert))
        return started[-1]

    yield start
    for fake in started:
        fake.close()


def metainfo_of(data: bytes) -> MetaInfo:
    return MetaInfo(Digest.of_bytes(data), len(data), 1024, (hashlib.sha256(data).digest(),))


def standalone_proxy(servers: ServerProcess.Pool, root: Path) -> ServerProcess:
    return servers.start("kraken-proxy", {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "proxy": {"storage": str(root)},
    }, name="proxy")


def push_blob(reg: Registry, data: bytes) -> str:
    digest = sha256(data)
    put = reg.upload(REPO, data, digest)
    assert put.status == 201, (put.status, put.body)
    return digest


def assert_no_traceback(*processes: ServerProcess) -> None:
    for process in processes:
        log = process.log()
        assert "Traceback" not in log and "Unhandled" not in log, (process, log[-3000:])


# -- the registry: manifests pushed by clients ---------------------------------------------------

def test_manifest_put_answers_400_manifest_invalid(servers: ServerProcess.Pool, tmp_path: Path) -> None:
    proxy = standalone_proxy(servers, tmp_path / "proxy")
    reg = Registry("127.0.0.1", proxy.port("registry"))
    config = b'{"architecture": "amd64", "os": "linux"}'
    push_blob(reg, config)
    for name, body in manifest_bodies(config).items():
        for reference in ("v1", sha256(body)):
            reply = reg.put_manifest(REPO, reference, body, OCI_MANIFEST)
            assert reply.status == 400, (name, reference, reply.status, reply.body[:300])
            assert reply.error_codes() == ["MANIFEST_INVALID"], (name, reply.body[:300])
        assert reg.request("GET", f"/v2/{REPO}/manifests/{sha256(body)}").status == 404, name
    good = b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'", "config": ' \
        + descriptor(config) + b', "layers": []}'
    assert reg.put_manifest(REPO, "v1", good, OCI_MANIFEST).status == 201
    assert reg.request("GET", f"/v2/{REPO}/manifests/v1").body == good
    assert_no_traceback(proxy)


def test_a_pathological_blob_pulled_as_a_manifest_is_unknown(
    servers: ServerProcess.Pool, tmp_path: Path
) -> None:
    """A blob is whatever was pushed; pulled as a manifest by its digest it must be a clean 404."""
    proxy = standalone_proxy(servers, tmp_path / "proxy")
    reg = Registry("127.0.0.1", proxy.port("registry"))
    for name, body in manifest_bodies(b"{}").items():
        digest = push_blob(reg, body)
        reply = reg.request("GET", f"/v2/{REPO}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
        assert reply.status == 404 and reply.error_codes() == ["MANIFEST_UNKNOWN"], (name, reply.status)
    assert reg.request("GET", "/v2/").status == 200
    assert_no_traceback(proxy)


# -- the tracker: answers of origins -----------------------------------------------------------

def announce_body(digest: Digest, namespace: str = "ns") -> bytes:
    peer = {"peer_id": "cd" * 20, "ip": "127.0.0.1", "port": 7, "complete": False}
    return json.dumps({"digest": str(digest), "namespace": namespace, "peer": peer}).encode()


def test_tracker_refuses_what_origins_answer_in_pathological_json(
    pki: Path, servers: ServerProcess.Pool, fakes: Callable[..., FakePeer]
) -> None:
    """Each answer comes from its own origin, owner of its own blob (a failed peer context is
    remembered per origin); a well-behaved origin is still used afterwards."""
    owner: dict[str, str] = {}

    def front(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        m = re.fullmatch(r"/blobs/sha256:([0-9a-f]{64})/locations", path)
        return (200, {"Origin-Locations": owner[m.group(1)]}, b"") if m else (404, {}, b"{}")

    def answering(answer: bytes) -> Handler:
        return lambda method, path: (200, {}, answer)

    front_origin = fakes(pki, "origin", front)
    blobs = {name: Digest.of_bytes(name.encode()) for name in ANSWERS}
    for name, answer in ANSWERS.items():
        owner[blobs[name].hex] = fakes(pki, "origin", answering(answer)).address
    good = metainfo_of(b"a well-formed blob")
    good_context = {"peer_id": "ef" * 20, "ip": "127.0.0.1", "port": 4242, "origin": True}

    def well_behaved(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        if path.endswith("/metainfo"):
            return 200, {}, good.to_json()
        return 200, {}, json.dumps(good_context).encode()

    owner[good.digest.hex] = fakes(pki, "origin", well_behaved).address
    tracker = servers.start("kraken-tracker", {
        "listen": ["tls:tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "tracker"),
        "tracker": {"origins": [front_origin.address]},
    }, name="tracker")
    port = tracker.port()
    for name, digest in blobs.items():
        status, body = call(pki, port, "GET", f"/namespace/ns/blobs/{digest}/metainfo", role="agent")
        assert status == 502 and body["error"]["code"] == "ORIGIN_ERROR", (name, status, body)
        info_hash = hashlib.sha256(name.encode()).hexdigest()
        status, body = call(pki, port, "POST", f"/announce/{info_hash}", announce_body(digest), role="agent")
        assert status == 503 and body["error"]["code"] == "NO_PEERS", (name, status, body)
    status, body = call(pki, port, "GET", f"/namespace/ns/blobs/{good.digest}/metainfo", role="agent")
    assert status == 200 and MetaInfo.from_dict(body) == good
    status, body = call(pki, port, "POST", f"/announce/{good.info_hash_hex}", announce_body(good.digest),
                        role="agent")
    assert status == 200 and [p["port"] for p in body["peers"]] == [4242], body
    text = call(pki, port, "GET", "/metrics", role="agent")[1]
    refused = "kraken_tracker_origin_answers_refused_total"
    assert f'{refused}{{answer="metainfo"}} {2 * len(ANSWERS)}.0' in text, text  # a GET and an announce each
    assert f'{refused}{{answer="peer_context"}} {len(ANSWERS)}.0' in text, text
    assert tracker.log().count("logged once per origin") == len(ANSWERS)
    assert_no_traceback(tracker)


# -- the agent: answers of its tracker ---------------------------------------------------------

def test_agent_refuses_what_its_tracker_answers_in_pathological_json(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool, fakes: Callable[..., FakePeer]
) -> None:
    blobs = {Digest.of_bytes(name.encode()).hex: answer for name, answer in ANSWERS.items()}
    good = metainfo_of(b"a blob nobody will serve")
    endless = b"[" + b"0," * 9_000_000 + b"0]"  # 18 MB: over the 16 MiB a JSON answer may have
    announces = iter([endless, *ANSWERS.values()] * 100)

    def tracker(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        if method == "POST":
            return 200, {}, next(announces)
        m = re.search(r"/blobs/sha256:([0-9a-f]{64})/metainfo", path)
        if m and m.group(1) == good.digest.hex:
            return 200, {}, good.to_json()
        return 200, {}, blobs[m.group(1)] if m else b"{}"

    fake = fakes(pki, "tracker", tracker)
    agent = servers.start("kraken-agent", agent_config(pki, tmp_path / "agent", fake.port), name="agent")
    api = Registry("127.0.0.1", agent.port("http"))
    for hex_digest in blobs:
        reply = api.request("GET", f"/namespace/ns/blobs/sha256:{hex_digest}")
        assert reply.status == 502 and reply.json()["error"]["code"] == "BAD_UPSTREAM_ANSWER", reply
    # a download whose announces are all answered with pathological JSON: it waits, and the
    # agent keeps announcing and serving
    waiting = threading.Thread(target=_request_quietly, args=(api, f"/namespace/ns/blobs/{good.digest}"),
                               daemon=True)
    waiting.start()
    deadline = time.monotonic() + 30
    while sum(r.startswith("POST") for r in fake.requests) < 2 * len(ANSWERS) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sum(r.startswith("POST") for r in fake.requests) >= 2 * len(ANSWERS), fake.requests
    assert api.request("GET", "/readiness").status == 200
    assert "unusable announce answer" in agent.log()
    assert "sent a body over 16777216 bytes" in agent.log()
    assert_no_traceback(agent)


def _request_quietly(api: Registry, path: str) -> None:
    try:
        api.request("GET", path)
    except OSError:
        pass


# -- the build-index: manifests on the origins ---------------------------------------------------

def test_build_index_refuses_a_pathological_manifest_on_the_origins(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool, fakes: Callable[..., FakePeer]
) -> None:
    config = b'{"os": "linux"}'
    manifests = {sha256(body): body for body in manifest_bodies(config).values()}
    good = b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'", "config": ' \
        + descriptor(config) + b', "layers": []}'
    manifests[sha256(good)] = good
    origin: FakePeer

    def answer(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        digest = re.search(r"sha256:[0-9a-f]{64}", path)
        if path.endswith("/locations"):
            return 200, {"Origin-Locations": origin.address}, b""
        if method == "HEAD" and digest:
            return 200, {"Kraken-Blob-Size": str(len(config))}, b""
        if digest and digest.group(0) in manifests:
            return 200, {"Content-Type": "application/octet-stream"}, manifests[digest.group(0)]
        return 404, {}, b"{}"

    origin = fakes(pki, "origin", answer)
    index = servers.start("kraken-build-index", build_index_config(pki, tmp_path / "index", origin.port),
                          name="build-index")
    for digest, body in manifests.items():
        if body == good:
            continue
        status, reply = call(pki, index.port(), "PUT", f"/tags/{REPO}:v1/digest/{digest}", b"", role="proxy")
        assert status == 400 and reply["error"]["code"] == "MANIFEST_INVALID", (body[:80], status, reply)
    good_tag = f"/tags/{REPO}:v1/digest/{sha256(good)}"
    status, reply = call(pki, index.port(), "PUT", good_tag, b"", role="proxy")
    assert status == 200, reply
    assert call(pki, index.port(), "GET", f"/tags/{REPO}:v1", role="proxy")[1] == sha256(good)
    assert_no_traceback(index)


# -- the proxy and the agent's registry port: tag lists of the build-index -----------------------

def registry_ports_on(
    servers: ServerProcess.Pool, pki: Path, tmp_path: Path, build_index: str
) -> tuple[ServerProcess, ServerProcess]:
    """A kraken-proxy and a kraken-agent whose registry ports ask *build_index* for tags and referrers."""
    proxy = servers.start("kraken-proxy", {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "proxy"),
        "proxy": {"storage": str(tmp_path / "proxy"), "build_index": build_index},
    }, name="proxy")
    agent_cfg = agent_config(pki, tmp_path / "agent", 1)
    agent_cfg["registry"] = {"listen": ["tcp:0:interface=127.0.0.1"], "build_index": build_index}
    return proxy, servers.start("kraken-agent", agent_cfg, name="agent")


def test_registry_ports_refuse_pathological_tag_lists(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool, fakes: Callable[..., FakePeer]
) -> None:
    answers = list(ANSWERS.values())

    def index(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        m = re.match(r"/list/hostile%2Fa(\d+)", path)
        if m:
            return 200, {}, answers[int(m.group(1))]
        return 200, {}, b'{"result": ["hostile/good:v1"], "next_offset": null}'

    fake = fakes(pki, "build-index", index)
    proxy, agent = registry_ports_on(servers, pki, tmp_path, fake.address)
    for reg in (Registry("127.0.0.1", proxy.port("registry")), Registry("127.0.0.1", agent.port("registry"))):
        for i, raw in enumerate(answers):
            reply = reg.request("GET", f"/v2/hostile/a{i}/tags/list")
            assert reply.status == 503 and reply.error_codes() == ["UNAVAILABLE"], (raw[:80], reply)
        reply = reg.request("GET", "/v2/hostile/good/tags/list")
        assert reply.status == 200 and reply.json()["tags"] == ["v1"], reply
    assert_no_traceback(proxy, agent)


# -- the state event websocket: commands -----------------------------------------------------

N1 = "bbbbbbbb-0000-0000-0000-000000000001"


def state_ws(pki: Path, port: int) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    conn = https(pki, "client").wrap_socket(raw, server_hostname="127.0.0.1")
    conn.sendall(UPGRADE)
    head = b""
    while b"\r\n\r\n" not in head:
        head += conn.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return conn


def test_state_websocket_answers_pathological_commands_and_stays_usable(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    state = servers.start("kraken-state", state_config(pki, tmp_path, freeze=True), name="state")
    ws = state_ws(pki, state.port("ws"))
    commands = [
        nested(250),
        b'{"command": 0, "type": ' + nested(200) + b"}",
        b'{"command": ' + huge_int(450) + b', "type": "STATE_CHANGE"}',
        b'{"command": NaN, "type": "STATE_CHANGE"}',
        b'{"command": 1, "command": 0, "type": "STATE_CHANGE"}',
        b"",
    ]
    for command in commands:
        ws.sendall(ws_frame(command))
        assert "error" in json.loads(ws_read(ws)), command
    ws.sendall(ws_frame(b'{"command": 0, "type": "\xff"}', opcode=2))  # text frames: WebSocket checks UTF-8
    assert "error" in json.loads(ws_read(ws))
    ws.sendall(ws_frame(b'{"command": "SUBSCRIBE", "type": "STATE_CHANGE"}'))
    assert call(pki, state.port("http"), "POST", "/cfg/node", b'{"id": "' + N1.encode() + b'"}')[0] == 201
    event = json.loads(ws_read(ws))
    assert event["type"] == 1 and event["nodeid"] == N1, event
    ws.close()

    # WebSocket's own refusals (autobahn fails the connection, logging the close code): a message
    # over the 512-byte limit, a text frame that is not UTF-8
    for frame, code in ((ws_frame(nested(100_000)), 1009), (ws_frame(b'{"type": "\xff"}'), 1007)):
        refused = state_ws(pki, state.port("ws"))
        refused.sendall(frame)
        with pytest.raises(ConnectionError):
            while True:
                ws_read(refused)
        refused.close()
        assert f"failing WebSocket connection (code={code})" in state.log()
    assert_no_traceback(state)


# -- the kraken command: answers of servers ----------------------------------------------------

def kraken(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kraken.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=support.REPO, env=support._env())


def test_cli_reports_pathological_answers_with_an_exit_code(
    pki: Path, fakes: Callable[..., FakePeer]
) -> None:
    answers = {**ANSWERS, "nodes nested": b'{"nodes": [' + nested(900) + b"]}",
               "nodes without fields": b'{"nodes": [{}]}'}
    current = {"answer": b""}
    fake = fakes(pki, "state", lambda method, path: (200, {}, current["answer"]))
    fake_pipeline = fakes(pki, "pipeline", lambda method, path: (200, {}, current["answer"]))  # role checked
    plain = fakes(None, "pubsub", lambda method, path: (200, {}, current["answer"]))
    state = ["state", "--url", f"https://{fake.address}", "--pki", str(pki)]
    pipeline = ["pipeline", "--url", f"https://{fake_pipeline.address}", "--cacert", str(pki / "ca.pem"),
                "--cert", str(pki / "client.pem"), "--key", str(pki / "client.key")]
    pubsub = ["pubsub", "--admin", f"http://{plain.address}", "dump-topics"]
    for name, answer in answers.items():
        current["answer"] = answer
        commands = ([*state, "nodes"], [*state, "nodes", "--json"], [*pipeline, "services", "list"], pubsub)
        for command in commands:
            result = kraken(*command)
            # `pipeline services list` prints any JSON it is given, `state nodes --json` any node list
            if (command[0] == "pipeline" and name not in NOT_JSON) or (
                    command[-1] == "--json" and name == "nodes without fields"):
                assert result.returncode == 0, (name, command, result.stderr[-2000:])
                continue
            what = (name, command, result.stderr[-2000:])
            assert result.returncode == 1 and "Traceback" not in result.stderr, what
            assert result.stderr.startswith(f"kraken {command[0]}: "), what
    current["answer"] = json.dumps({"nodes": [{"id": N1, "nodename": "n1", "platform": "p", "physState": "ON",
                                               "runState": "UP", "busy": "FREE"}]}).encode()
    result = kraken(*state, "nodes")
    assert result.returncode == 0 and "n1" in result.stdout, result.stderr


# -- the build-index: an upstream registry as its tag backend ------------------------------------

def test_build_index_survives_an_upstream_registry_answering_pathological_json(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool, fakes: Callable[..., FakePeer]
) -> None:
    """Tag lists and bearer tokens of a ``registry`` backend (e.g. a public registry)."""
    answers = list(ANSWERS.values())
    upstream: FakePeer

    def registry(method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        listing = re.fullmatch(r"/v2/hostile/a(\d+)/tags/list", path)
        if listing:
            return 200, {}, answers[int(listing.group(1))]
        token = re.fullmatch(r"/token/(\d+)\?.*", path)
        if token:
            return 200, {}, answers[int(token.group(1))]
        manifest = re.fullmatch(r"/v2/hostile/t(\d+)/manifests/v1", path)
        if manifest:
            realm = f"https://{upstream.address}/token/{manifest.group(1)}"
            return 401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="fake"'}, b"{}"
        return 404, {}, b"{}"

    upstream = fakes(pki, "origin", registry, client_cert=False)
    config = build_index_config(pki, tmp_path / "index", 1)
    backend = {"type": "registry", "address": upstream.address, "ca": str(pki / "ca.pem")}
    config["buildindex"]["backend"] = backend
    index = servers.start("kraken-build-index", config, name="build-index")
    for i in range(len(answers)):
        status, reply = call(pki, index.port(), "GET", f"/list/hostile%2Fa{i}:", role="proxy")
        assert status == 200 and reply["result"] == [], (answers[i][:80], status, reply)
        status, reply = call(pki, index.port(), "GET", f"/tags/hostile%2Ft{i}:v1", role="proxy")
        assert status == 404 and reply["error"]["code"] == "TAG_UNKNOWN", (answers[i][:80], status, reply)
    log = index.log()
    assert log.count("sent a body that is not usable JSON") >= 2 * len(NOT_JSON) - 2, log[-3000:]
    assert_no_traceback(index)


# -- the pipeline: answers of the HTTP services it calls -----------------------------------------

def test_pipeline_http_client_refuses_pathological_answers(
    servers: ServerProcess.Pool, tmp_path: Path
) -> None:
    """Too deep or too long; NaN (written as null) and bytes that are not UTF-8 (replaced) are the
    pipeline's documented leniency towards the services it calls."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    refused = NOT_JSON - {"NaN", "not UTF-8"}
    answers = {name: ANSWERS[name] for name in ANSWERS if name in refused}
    services = {name: Listener(head % len(answer) + answer) for name, answer in answers.items()}
    try:
        server = servers.start("kraken-pipeline", pipeline_config(
            tmp_path, outbound_allow=[f"127.0.0.1:{listener.port}" for listener in services.values()]))
        api = Http(server.port("http"))
        for i, (name, listener) in enumerate(services.items()):
            service = http_service(f"s{i}", f"http://127.0.0.1:{listener.port}")
            service["interface"]["get"]["call"] = {"parse_json_body": True}
            api.ok("POST", "/services/define", service)
            api.ok("POST", f"/services/start/s{i}")
            answer = api.post(f"/services/call/s{i}/get", {"path": "/"})
            what = (name, answer.raw[:300])
            assert answer.status == 400 and "response body" in json.dumps(answer.json), what
        assert "Traceback" not in server.log()
    finally:
        for listener in services.values():
            listener.close()


# -- the agent's registry port: manifests that arrive over P2P -----------------------------------

def test_agent_registry_port_answers_manifest_unknown_for_pathological_manifests(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    """Anyone who may push to an origin can put any bytes under a digest; the agent's registry
    port fetches them over P2P and must not choke on them as a manifest."""
    origin = servers.start("kraken-origin", origin_config(pki, tmp_path / "origin"), name="origin")
    tracker = servers.start("kraken-tracker", tracker_config(pki, origin.port("http")), name="tracker")
    config = agent_config(pki, tmp_path / "agent", tracker.port("http"))
    config["registry"] = {"listen": ["tcp:0:interface=127.0.0.1"]}
    agent = servers.start("kraken-agent", config, name="agent")
    reg = Registry("127.0.0.1", agent.port("registry"))
    config_blob = b'{"os": "linux"}'
    good = b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'", "config": ' \
        + descriptor(config_blob) + b', "layers": []}'
    bodies = {**manifest_bodies(config_blob), "well-formed": good}
    for name, body in bodies.items():
        src = tmp_path / "manifest"
        src.write_bytes(body)
        pushed = kraken("blob", "push", str(src), "--origin", f"127.0.0.1:{origin.port('http')}",
                        "--namespace", REPO, "--pki", str(pki))
        assert pushed.returncode == 0, (name, pushed.stderr)
        reply = reg.request("GET", f"/v2/{REPO}/manifests/{sha256(body)}", headers={"Accept": OCI_MANIFEST})
        if name == "well-formed":
            assert reply.status == 200 and reply.body == good, reply
        else:
            assert reply.status == 404 and reply.error_codes() == ["MANIFEST_UNKNOWN"], (name, reply)
    assert_no_traceback(agent)


def test_doctor_talks_only_to_servers_presenting_the_expected_role(
    pki: Path, fakes: Callable[..., FakePeer]
) -> None:
    from kraken.cli.doctor import CheckFailed, Doctor, Server

    healthy = lambda method, path: (200, {}, b'{"status": "ok"}')  # noqa: E731
    impostor = fakes(pki, "origin", healthy)
    tracker = fakes(pki, "tracker", healthy)
    doctor = Doctor("127.0.0.1", pki, timeout=5)
    assert doctor.health(Server("kraken-tracker", tracker.port, True)).endswith("/health")
    with pytest.raises(CheckFailed, match="role 'origin'"):
        doctor.health(Server("kraken-tracker", impostor.port, True))
    assert impostor.requests == []
