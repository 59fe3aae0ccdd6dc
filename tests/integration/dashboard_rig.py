"""A small real kraken family for the dashboard's browser tests, and the browser itself.

One of each server as twistd processes on random loopback ports (an origin with a filesystem
backend, a tracker, two agents, a state engine driving a real ipmi_sim BMC and three sim nodes,
a pipeline server with the dev project and a breakable stub HTTP service it may call, pub/sub
with a proxy node below it (its upstream over mutual TLS), a build-index and a proxy holding an
image pushed by skopeo) and a kraken-dashboard pointed at all of them with its client certificate.
Headless Debian chromium is driven by playwright (never a downloaded browser).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kraken.core.digest import Digest
from kraken.core.tls import stdlib_client_context
from tests.integration.p2p_fixtures import agent_config, origin_config, tracker_config
from tests.integration.pipeline_http import run_flaky_stub
from tests.integration.registry_support import build_index_config, build_oci_layout, proxy_config, skopeo
from tests.integration.state_rig import PARENT_ID, state_config
from tests.integration.test_state_ipmi import Bmc, ipmi_node
from tests.support import REPO, ServerProcess, tls_section

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = REPO / "artifacts" / "dashboard"
VIEWER_TOKEN = "viewer-token-for-tests"
OPERATOR_TOKEN = "operator-token-for-tests"
NS = "dash/blobs"
PIECE = 1024 * 1024
BLOB_PIECES = 6
SIM_NODES = [f"dddddddd-0000-0000-0000-00000000000{i}" for i in range(1, 4)]
BMC_NODE = "eeeeeeee-0000-0000-0000-000000000001"
FLAKY_TOKEN = "flaky-stub-token"


@dataclass
class Rig:
    pki: Path
    procs: dict[str, ServerProcess]
    bmc: Bmc
    blob: Digest
    url: str
    flaky_port: int
    threads: list[threading.Thread] = field(default_factory=list)

    def port(self, name: str, listener: str = "http") -> int:
        return self.procs[name].port(listener)

    def pull_in_background(self, agent: str) -> threading.Thread:
        """GET the blob from *agent* (its plain loopback port) in a thread, as a local client would."""
        url = f"http://127.0.0.1:{self.port(agent)}/namespace/{NS.replace('/', '%2F')}/blobs/{self.blob}"

        def pull() -> None:
            with urllib.request.urlopen(url, timeout=60) as r:
                r.read()

        thread = threading.Thread(target=pull, daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread

    def call_pipeline(self, event: dict[str, Any]) -> Any:
        return self.pipeline_api("POST", "/call", event)

    def pipeline_api(self, method: str, path: str, body: Any = None) -> Any:
        """The pipeline server's answer (a 400's JSON too), over mutual TLS as a client."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"https://127.0.0.1:{self.port('pipeline')}{path}", data, method=method)
        pki = self.pki
        context = stdlib_client_context(
            str(pki / "ca.pem"), str(pki / "client.pem"), str(pki / "client.key"), {"pipeline"}
        )
        try:
            with urllib.request.urlopen(req, timeout=20, context=context) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            return json.loads(e.read())

    def flaky_stub(self, path: str) -> None:
        """Break (``/_break``) or fix (``/_fix``) the stub service the ``orders`` pipeline calls."""
        urllib.request.urlopen(
            urllib.request.Request(f"http://127.0.0.1:{self.flaky_port}{path}", data=b"", method="POST"),
            timeout=10,
        ).close()


def pubsub_command(port: int, data: bytes, sock: socket.socket | None = None) -> socket.socket:
    """Send one memcached set command (subscribe, publish) and read its STORED."""
    sock = sock or socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(data)
    answer = b""
    while not answer.endswith(b"\r\n"):
        answer += sock.recv(100)
    assert answer == b"STORED\r\n", answer
    return sock


def _start_family(
    pool: ServerProcess.Pool, pki: Path, root: Path, bmc: Bmc, flaky_port: int
) -> dict[str, ServerProcess]:
    procs: dict[str, ServerProcess] = {}
    backend = root / "backend"
    backend.mkdir()
    config = origin_config(pki, root / "origin", backend)
    config["bandwidth"] = {"egress_bits_per_sec": 16_000_000}  # about 2 pieces a second: progress shows
    procs["origin"] = pool.start("kraken-origin", config, name="origin")
    tracker = tracker_config(pki, procs["origin"].port("http"))
    procs["tracker"] = pool.start("kraken-tracker", tracker, name="tracker")
    for name in ("a0", "a1"):
        procs[name] = pool.start(
            "kraken-agent", agent_config(pki, root / name, procs["tracker"].port("http")), name=name
        )
    state = state_config(
        pki, root / "state", modules=["ipmi", "sim"],
        module_config={"ipmi": {"poll": 0.5, "timeout": 10}, "sim": {"latency": 0.05}},
    )
    nodes = [ipmi_node(bmc.port, "secret", BMC_NODE)]
    for i, node_id in enumerate(SIM_NODES):
        on = i < 2
        nodes.append({
            "id": node_id, "nodename": f"sim{i + 1}", "platform": "sim", "parentId": PARENT_ID,
            "physState": "POWER_ON" if on else "POWER_OFF", "runState": "SYNC" if on else "UNKNOWN",
        })
    (root / "nodes.json").write_text(json.dumps({"nodes": nodes}))
    state["state"]["state_file"] = str(root / "nodes.json")
    (root / "state").mkdir()
    procs["state"] = pool.start("kraken-state", state, name="state")
    procs["pipeline"] = pool.start(
        "kraken-pipeline",
        {
            "listen": ["tls:tcp:0:interface=127.0.0.1"],
            "tls": tls_section(pki, "pipeline"),
            "pipeline": {
                "database": str(root / "pipeline.sqlite3"),
                "project_dir": str(REPO / "etc" / "pipeline-project"),
                "outbound_allow": [f"127.0.0.1:{flaky_port}"],
            },
        },
        name="pipeline",
    )
    local = "tcp:0:interface=127.0.0.1"
    procs["pubsub"] = pool.start(
        "kraken-pubsub",
        {
            "listen": [local, "tls:" + local],
            "tls": tls_section(pki, "pubsub"),
            "pubsub": {"websocket_listen": [], "admin_listen": [local]},
        },
        name="pubsub",
    )
    procs["pubsub-proxy"] = pool.start(  # a proxy node: the tested pub/sub is its upstream
        "kraken-pubsub",
        {
            "listen": [local],
            "tls": tls_section(pki, "pubsub"),
            "pubsub": {
                "websocket_listen": [], "admin_listen": [local],
                "upstream": [f"127.0.0.1:{procs['pubsub'].port('memcached-tls')}"],
            },
        },
        name="pubsub-proxy",
    )
    origin_port = procs["origin"].port("http")
    procs["build-index"] = pool.start(
        "kraken-build-index", build_index_config(pki, root / "index", origin_port), name="build-index"
    )
    procs["proxy"] = pool.start(
        "kraken-proxy",
        proxy_config(pki, root / "proxy", origin_port, procs["build-index"].port("http")),
        name="proxy",
    )
    return procs


def _dashboard_config(pki: Path, procs: dict[str, ServerProcess]) -> dict[str, Any]:
    def https(name: str, listener: str = "http") -> list[str]:
        return [f"https://127.0.0.1:{procs[name].port(listener)}"]

    def http(name: str, listener: str = "http") -> list[str]:
        return [f"http://127.0.0.1:{procs[name].port(listener)}"]

    return {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "client"),
        "dashboard": {"ws_listen": ["tcp:0:interface=127.0.0.1"], "poll_interval": 0.5, "login_timeout": 1.0},
        "servers": {
            "agents": http("a0") + http("a1"),
            "origins": https("origin"),
            "trackers": https("tracker"),
            "build_index": https("build-index"),
            "proxies": http("proxy", "registry"),
            "state": https("state"),
            "pipeline": https("pipeline"),
            "pubsub": http("pubsub", "admin") + http("pubsub-proxy", "admin"),
        },
        "auth": {"viewer_tokens": [VIEWER_TOKEN], "operator_tokens": [OPERATOR_TOKEN]},
    }


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[Rig]:
    if shutil.which("ipmi_sim") is None:
        pytest.skip("needs ipmi_sim (apt package openipmi)")
    root = tmp_path_factory.mktemp("family")
    pool = ServerProcess.Pool(root)
    bmc = Bmc(root / "bmc")
    bmc.start()
    stub = contextmanager(run_flaky_stub)(root, FLAKY_TOKEN)
    try:
        flaky_port = stub.__enter__()
        procs = _start_family(pool, pki, root, bmc, flaky_port)
        data = os.urandom(BLOB_PIECES * PIECE)
        blob = Digest.of_bytes(data)
        (root / "backend" / blob.hex).write_bytes(data)
        layout = root / "image"
        layers = [{"hello.txt": b"hello from the dashboard test\n"}, {"big.bin": os.urandom(200_000)}]
        build_oci_layout(layout, "v1", layers)
        skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:v1",
               f"docker://127.0.0.1:{procs['proxy'].port('registry')}/demo/hello:v1")
        procs["dashboard"] = pool.start("kraken-dashboard", _dashboard_config(pki, procs), name="dashboard")
        yield Rig(pki, procs, bmc, blob, f"http://127.0.0.1:{procs['dashboard'].port('http')}/", flaky_port)
    finally:
        pool.stop_all()
        bmc.stop()
        stub.__exit__(None, None, None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def screenshot(page: Any, name: str) -> Path:
    """The whole page as ``artifacts/dashboard/<name>.png``, and its first screenful as
    ``artifacts/dashboard/window/<name>.png`` (what docs/images/ holds)."""
    (ARTIFACTS / "window").mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.screenshot(path=str(ARTIFACTS / "window" / f"{name}.png"))
    return path
