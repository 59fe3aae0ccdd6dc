"""kraken-state as a real twistd process: REST routes and errors, client certificates,
the event websocket, SQLite persistence and --state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor

from kraken.core.endpoints import connect
from kraken.core.tls import SeesTLSLayer
from kraken.state.client import ClientError, StateClient
from tests.integration.state_rig import PARENT_ID, client, state_config, wait_for
from tests.support import ServerProcess, run_twistd, tls_settings

N1 = "bbbbbbbb-0000-0000-0000-000000000001"


def sim_node(node_id: str = N1, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "nodename": "sim1", "platform": "sim", "parentId": PARENT_ID, **extra}


@pytest.fixture
def engine(pki: Path, tmp_path: Path, servers: ServerProcess.Pool) -> tuple[ServerProcess, StateClient]:
    proc = servers.start("kraken-state", state_config(pki, tmp_path), name="engine")
    return proc, client(pki, proc)


def test_power_on_through_rest_converges_and_shows_in_every_view(engine: Any) -> None:
    proc, api = engine
    created = api.post("/cfg/node", sim_node(physState="POWER_ON", runState="SYNC"))
    assert created["physState"] == "POWER_ON" and created["busy"] == "FREE"
    dsc = wait_for(
        lambda: (d := api.get(f"/dsc/node/{N1}"))["runState"] == "SYNC" and d, what="Dsc to follow Cfg"
    )
    assert dsc["physState"] == "POWER_ON"
    assert {n["id"] for n in api.get("/cfg/nodes")["nodes"]} == {N1, PARENT_ID}
    path = api.get(f"/sme/path/{N1}")
    assert [s["id"] for s in path["chain"]] == ["sim/UKtoOFF", "sim/OFFtoON", "sim/BOOT"] and path["cmplt"]
    graph = api.get(f"/graph/node/{N1}/json")
    assert sum(1 for e in graph["edges"] if e["color"]["color"] == "#00aa00") == 3
    assert "digraph" in api.get("/graph/dot", raw=True)
    assert any(e["name"] == "PhysState" for e in api.get("/enumerables"))
    assert api.get("/ws") == {"host": "127.0.0.1", "port": str(proc.port("ws")), "url": "/ws"}
    assert api.get("/health") == {"status": "ok"}
    own = {s["id"]: s["state"] for s in api.get(f"/dsc/node/{PARENT_ID}")["services"]}
    assert own["restapi"] == own["websocket"] == own["sim"] == "RUN"
    assert "kraken_state_mutations_total 3.0" in api.get("/metrics", raw=True)


def test_errors_are_json_4xx(engine: Any) -> None:
    _, api = engine
    api.post("/cfg/node", sim_node())
    cases = [
        ("GET", "/cfg/node/not-a-uuid", None, 400, "BAD_NODE_ID"),
        ("GET", "/cfg/node/cccccccc-0000-0000-0000-000000000001", None, 404, "NODE_NOT_FOUND"),
        ("POST", "/cfg/node", sim_node(), 409, "NODE_EXISTS"),
        ("POST", "/cfg/node", {"id": N1, "warmth": 3}, 400, "BAD_NODE"),
        ("PUT", "/cfg/node", sim_node(physState="LUKEWARM"), 400, "BAD_NODE"),
        (
            "PUT",
            "/cfg/nodes",
            {"nodes": [sim_node("dddddddd-0000-0000-0000-000000000001")]},
            404,
            "NODE_NOT_FOUND",
        ),
        ("POST", "/cfg/nodes", {"node": []}, 400, "BAD_NODE_LIST"),
        (
            "POST",
            "/cfg/node",
            {"id": N1, "extensions": [{"@type": "type.googleapis.com/No.Such"}]},
            400,
            "BAD_NODE",
        ),
        ("DELETE", "/cfg/nodes", None, 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/nowhere", None, 404, "NOT_FOUND"),
    ]
    for method, path, body, status, code in cases:
        with pytest.raises(ClientError) as err:
            api.request(method, path, body)
        assert (err.value.status, err.value.code) == (status, code), (method, path)
    with pytest.raises(ClientError) as err:
        api.request("POST", "/cfg/node", None)
    assert err.value.status == 400
    assert api.request("DELETE", f"/cfg/node/{N1}")["id"] == N1
    assert api.get("/health")["status"] == "ok"


def test_only_admitted_certificate_roles_get_in(pki: Path, engine: Any) -> None:
    proc, _ = engine
    assert client(pki, proc, "state").get("/sme/frozen") == {"frozen": False}
    with pytest.raises(ClientError, match="cannot reach"):
        client(pki, proc, "origin").get("/sme/frozen")
    anonymous = StateClient(f"https://127.0.0.1:{proc.port('http')}", ca=str(pki / "ca.pem"))
    with pytest.raises(ClientError):
        anonymous.get("/cfg/nodes")


def test_freeze_stops_mutations_until_thaw(engine: Any) -> None:
    _, api = engine
    assert api.get("/sme/freeze") == {"frozen": True}
    api.post("/cfg/node", sim_node(physState="POWER_ON"))
    with pytest.raises(AssertionError):
        wait_for(lambda: api.get(f"/dsc/node/{N1}")["physState"] == "POWER_ON", timeout=1)
    assert api.request("POST", "/sme/thaw") == {"frozen": False}
    wait_for(lambda: api.get(f"/dsc/node/{N1}")["physState"] == "POWER_ON", what="power on after thaw")


def test_cfg_survives_a_restart_and_state_file_seeds(pki: Path, tmp_path: Path, servers: Any) -> None:
    state_file = tmp_path / "nodes.json"
    state_file.write_text(
        json.dumps({"nodes": [sim_node(physState="POWER_OFF"), {"id": PARENT_ID, "nodename": "boss"}]})
    )
    config = state_config(pki, tmp_path)
    proc = servers.start("kraken-state", config, name="first", extra_args=["--state", str(state_file)])
    api = client(pki, proc)
    assert api.get(f"/cfg/node/{PARENT_ID}")["nodename"] == "boss"
    node = api.get(f"/cfg/node/{N1}")
    node["arch"] = "riscv64"
    api.put("/cfg/node", node)
    proc.stop()
    again = servers.start("kraken-state", config, name="second")
    assert client(pki, again).get(f"/cfg/node/{N1}")["arch"] == "riscv64"


def test_bad_state_file_is_a_clear_startup_error(pki: Path, tmp_path: Path, servers: Any) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"nodes": [{"id": "x"}]}')
    with pytest.raises(RuntimeError, match="nodes\\[0\\]: node id is not a UUID"):
        servers.start("kraken-state", state_config(pki, tmp_path, state_file=str(bad)), name="bad")


class Listener(SeesTLSLayer, WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.messages.append(json.loads(payload))
        waiting, self.factory.waiting = self.factory.waiting, None
        if waiting is not None:
            waiting.callback(None)


@pytest_twisted.inlineCallbacks
def test_websocket_streams_subscribed_events(pki: Path, engine: Any) -> Any:
    proc, api = engine
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{proc.port('ws')}/ws")
    factory.protocol = Listener
    factory.opened, factory.messages, factory.waiting = defer.Deferred(), [], None
    yield connect(reactor, "127.0.0.1", proc.port("ws"), factory, tls_settings(pki, "client"), ["state"])
    ws = yield factory.opened
    ws.sendMessage(b'{"command": "SUBSCRIBE", "type": "STATE_CHANGE"}')
    ws.sendMessage(b'{"command": 0, "type": 5}')
    ws.sendMessage(b'{"command": "JUMP"}')
    yield _until(factory, lambda: any("error" in m for m in factory.messages))
    yield reactor_call(api.post, "/cfg/node", sim_node(physState="POWER_ON"))
    yield _until(
        factory,
        lambda: any(
            m.get("value") == "POWER_ON" and m["type"] == 1 and m["data"].startswith("(UPDATE)")
            for m in factory.messages
        ),
    )
    kinds = {m.get("type") for m in factory.messages}
    assert kinds >= {1, 5} and 2 not in kinds
    create = next(m for m in factory.messages if m.get("data", "").startswith("(CREATE)"))
    assert create["nodeid"] == N1 and create["url"] == ""
    discovery = next(m for m in factory.messages if m.get("type") == 5)
    assert discovery["data"] == f"(sim) {N1}:/PhysState == POWER_OFF" and discovery["url"] == "/PhysState"
    ws.sendClose()


def reactor_call(fn: Any, *args: Any) -> Any:
    from twisted.internet.threads import deferToThread

    return deferToThread(fn, *args)


@defer.inlineCallbacks
def _until(factory: Any, check: Any, timeout: float = 15.0) -> Any:
    deadline = reactor.seconds() + timeout
    while not check():
        if reactor.seconds() > deadline:
            raise AssertionError(f"websocket messages so far: {factory.messages}")
        d = defer.Deferred()
        reactor.callLater(0.05, d.callback, None)
        yield d


def test_startup_errors_are_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("state:\n  modules: [warp-drive]\n")
    out = run_twistd("kraken-state", "--config", str(config))
    assert out.returncode != 0 and "unknown state module 'warp-drive'" in out.stderr + out.stdout
    out = run_twistd("kraken-state", "--config", str(config), "--parent", "nohost")
    assert out.returncode != 0
    config.write_text("state:\n  colour: blue\n")
    out = run_twistd("kraken-state", "--config", str(config))
    assert "unknown key 'state.colour'" in out.stderr + out.stdout
