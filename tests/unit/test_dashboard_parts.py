"""The dashboard's parts without a network: login, metric parsing, the hub on a Clock, adapters'
merging and checks (the browser tests run them against real servers)."""

from __future__ import annotations

from typing import Any

import pytest
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from kraken.core.tls import PeerIdentity
from kraken.dashboard.adapters import NOT_AVAILABLE, each
from kraken.dashboard.adapters.health import MetricHistory, metric_totals
from kraken.dashboard.adapters.nodes import NodesAdapter, group_members, node_id, redact
from kraken.dashboard.adapters.pipelines import PipelinesAdapter, error_route
from kraken.dashboard.adapters.swarm import SwarmAdapter
from kraken.dashboard.adapters.topics import tree_place
from kraken.dashboard.auth import OPERATOR, VIEWER, Access, LoginRefused
from kraken.dashboard.hub import Hub
from kraken.dashboard.sources import FetchError, Server, Unavailable, parse_server
from kraken.dashboard.websocket import DashboardSocket, DashboardSocketFactory


def result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred has not fired"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


# -- login -----------------------------------------------------------------------------------------
def test_login_roles() -> None:
    open_door = Access(operator_tokens=("op",))
    assert open_door.login(None, None) == VIEWER
    assert open_door.login("op", None) == OPERATOR
    with pytest.raises(LoginRefused):
        open_door.login("guess", None)
    locked = Access(viewer_tokens=("v",), operator_tokens=("op",), operator_certs=("alice",))
    with pytest.raises(LoginRefused, match="needs a token"):
        locked.login(None, None)
    with pytest.raises(LoginRefused):
        locked.login(12, None)
    assert locked.login("v", None) == VIEWER
    assert locked.login(None, PeerIdentity("bob", "client", ())) == VIEWER
    assert locked.login(None, PeerIdentity("alice", "client", ())) == OPERATOR


def _request(origin: str | None, host: str = "127.0.0.1:8471") -> ConnectionRequest:
    return ConnectionRequest("tcp:127.0.0.1:5", {}, host, "/", {}, 13, origin, [], [])


def test_websocket_refuses_pages_of_other_sites_and_browsers_over_the_cap() -> None:
    clock = Clock()
    factory = DashboardSocketFactory(Hub(clock, {}, 1.0), Access(), {}, {}, clock, max_clients=1)
    socket = factory.buildProtocol(None)
    socket.onConnect(_request("http://127.0.0.1:8470"))
    socket.onConnect(_request(None))
    with pytest.raises(ConnectionDeny) as refused:
        socket.onConnect(_request("https://evil.example"))
    assert refused.value.code == 403
    factory.open.add(DashboardSocket())
    with pytest.raises(ConnectionDeny) as full:
        socket.onConnect(_request("http://127.0.0.1:8470"))
    assert full.value.code == 503


# -- sources ---------------------------------------------------------------------------------------
def test_parse_server() -> None:
    assert parse_server("agent", "127.0.0.1:16000") == Server("agent", "https://127.0.0.1:16000")
    assert parse_server("pubsub", "http://127.0.0.1:12356/").url == "http://127.0.0.1:12356"
    assert parse_server("state", "https://h:3141").role == "state"
    for kind, text in (("agent", "ftp://h:1"), ("agent", "http://h"), ("nope", "h:1")):
        with pytest.raises(ValueError):
            parse_server(kind, text)


def test_each_marks_each_server_on_its_own() -> None:
    servers = [Server("pubsub", f"http://h:{p}") for p in (1, 2, 3)]
    answers = {1: succeed({"x": 1}), 2: fail(Unavailable("/tree")), 3: fail(FetchError("h:3 unreachable"))}
    rows = result(each(servers, lambda s: answers[int(s.url.rsplit(":", 1)[1])]))
    assert rows[0]["x"] == 1 and rows[0]["server"] == "pubsub h:1"
    assert rows[1]["unavailable"] == NOT_AVAILABLE
    assert rows[2]["error"] == "h:3 unreachable"


# -- metrics ---------------------------------------------------------------------------------------
PAGE = """# HELP kraken_agent_pieces_received_total verified pieces received
# TYPE kraken_agent_pieces_received_total counter
kraken_agent_pieces_received_total{from_role="agent"} 3.0
kraken_agent_pieces_received_total{from_role="origin"} 2.0
kraken_agent_pieces_received_created{from_role="agent"} 1.7e9
# HELP kraken_agent_peer_connections active peer connections
# TYPE kraken_agent_peer_connections gauge
kraken_agent_peer_connections 4.0
# HELP kraken_agent_latency_seconds a histogram
# TYPE kraken_agent_latency_seconds histogram
kraken_agent_latency_seconds_bucket{le="+Inf"} 7.0
kraken_agent_latency_seconds_count 7.0
kraken_agent_latency_seconds_sum 0.5
"""


def test_metric_totals_and_rates() -> None:
    totals = metric_totals(PAGE)
    assert totals == {
        "kraken_agent_pieces_received_total": ("counter", 5.0),
        "kraken_agent_peer_connections": ("gauge", 4.0),
        "kraken_agent_latency_seconds_count": ("counter", 7.0),
    }
    history = MetricHistory(3)
    history.add("a", 10.0, totals)
    history.add("a", 12.0, {**totals, "kraken_agent_pieces_received_total": ("counter", 9.0)})
    history.add("a", 13.0, {**totals, "kraken_agent_pieces_received_total": ("counter", 9.0)})
    series = {s["name"]: s for s in history.series("a")}
    assert series["kraken_agent_pieces_received_total"] == {
        "name": "kraken_agent_pieces_received_total", "kind": "rate", "points": [2.0, 0.0],
    }
    assert series["kraken_agent_peer_connections"]["points"] == [4.0, 4.0, 4.0]
    assert next(iter(series)) == "kraken_agent_pieces_received_total"  # the one that moved comes first
    assert history.series("b") == []


# -- hub -------------------------------------------------------------------------------------------
class Counting:
    def __init__(self) -> None:
        self.calls = 0
        self.pending: list[Deferred[dict[str, Any]]] = []

    def collect(self) -> Deferred[dict[str, Any]]:
        self.calls += 1
        d: Deferred[dict[str, Any]] = Deferred()
        self.pending.append(d)
        return d


def test_hub_polls_watched_pages_and_health_without_piling_up() -> None:
    clock = Clock()
    health, nodes = Counting(), Counting()
    hub = Hub(clock, {"health": health, "nodes": nodes}, 1.0)
    hub.start()
    assert (health.calls, nodes.calls) == (1, 0)
    clock.advance(1)
    assert health.calls == 1  # the first poll has not answered: no second one
    health.pending[0].callback({"servers": []})
    clock.advance(1)
    assert health.calls == 2
    seen: list[tuple[str, Any, float]] = []
    hub.watch("nodes", lambda page, data, at: seen.append((page, data, at)))
    assert nodes.calls == 1
    nodes.pending[0].callback({"servers": [1]})
    assert seen == [("nodes", {"servers": [1]}, 2.0)]
    late: list[Any] = []
    hub.watch("nodes", lambda page, data, at: late.append(data))
    assert late == [{"servers": [1]}]  # a new watcher gets the latest snapshot at once
    nodes.pending[1].errback(RuntimeError("collector bug"))  # logged; the page keeps polling
    clock.advance(1)
    assert nodes.calls == 3
    hub.stop()


# -- adapters --------------------------------------------------------------------------------------
def _torrent(have: int, peers: list[dict[str, Any]], agents: int = 0, origins: int = 0) -> dict[str, Any]:
    piece_from = [""] * 4 if have == 4 else ["0" * 40] * have + [None] * (4 - have)
    return {"digest": "sha256:" + "a" * 64, "size": 4 << 20, "pieces": 4, "have": have, "complete": have == 4,
            "from_agents": agents, "from_origins": origins, "peers": peers, "piece_from": piece_from}


def test_swarm_names_peers_and_measures_throughput() -> None:
    clock = Clock()
    adapter = SwarmAdapter(None, [], [], clock, 10)  # type: ignore[arg-type]
    origin = {"server": "origin o", "kind": "origin", "url": "https://o:1", "peer_id": "0" * 40,
              "torrents": [_torrent(4, [{"peer_id": "1" * 40, "received": 0, "sent": 3, "origin": False}])]}
    agent = {"server": "agent a", "kind": "agent", "url": "http://a:1", "peer_id": "1" * 40,
             "torrents": [_torrent(1, [{"peer_id": "0" * 40, "received": 1, "sent": 0, "origin": True},
                                       {"peer_id": "f" * 40, "received": 0, "sent": 0, "origin": False}],
                                   origins=1)]}
    down = {"server": "agent b", "kind": "agent", "url": "http://b:1", "error": "unreachable"}
    first = adapter._merge([origin, agent, down])
    [blob] = first["blobs"]
    assert blob["links"] == [{"from": "origin o", "to": "agent a", "pieces": 1, "origin": True}]
    assert blob["origin_share"] == 1.0 and blob["throughput"] == []
    assert [h["progress"] for h in blob["hosts"]] == [1.0, 0.25]
    assert blob["senders"] == ["origin o"]
    assert [h["piece_source"] for h in blob["hosts"]] == [[-1, -1, -1, -1], [0, -2, -2, -2]]
    assert first["servers"][2] == {
        "server": "agent b", "kind": "agent", "url": "http://b:1", "error": "unreachable"
    }
    clock.advance(2)
    agent["torrents"][0]["have"] = 3
    [blob] = adapter._merge([origin, agent])["blobs"]
    assert blob["throughput"] == [1 << 20]  # two pieces of 1 MiB in two seconds
    assert adapter._merge([])["blobs"] == [] and adapter.held == {} and adapter.rates == {}


class FakeState:
    """Answers like a state engine's REST API, from dicts."""

    def __init__(self) -> None:
        self.cfg = {"id": "n1", "physState": "POWER_ON", "nodename": "n1",
                    "extensions": [{"@type": "IPMI.BMC", "password": "hunter2", "user": "admin"}]}
        self.dsc = {"id": "n1", "physState": "POWER_OFF", "nodename": ""}
        self.puts: list[Any] = []

    def get_json(self, server: Server, path: str) -> Deferred[Any]:
        if path.startswith("/cfg/node/"):
            return succeed(dict(self.cfg))
        if path.startswith("/dsc/node/"):
            return succeed(dict(self.dsc))
        return fail(FetchError("no path", 409))

    def send_json(self, server: Server, method: str, path: str, body: Any) -> Deferred[Any]:
        self.puts.append((method, path, body))
        return succeed(body)


def test_node_detail_diff_redaction_and_power() -> None:
    state = FakeState()
    adapter = NodesAdapter(state, [Server("state", "https://s:1")])  # type: ignore[arg-type]
    detail = result(adapter.detail(0, "n1"))
    assert detail["path"] is None
    assert detail["diff"] == [{"key": "physState", "cfg": "POWER_ON", "dsc": "POWER_OFF", "same": False}]
    assert detail["cfg"]["extensions"][0] == {"@type": "IPMI.BMC", "password": "***", "user": "admin"}
    assert result(adapter.power(0, "n1", "POWER_OFF")) == {"id": "n1", "physState": "POWER_OFF"}
    assert state.puts[0][:2] == ("PUT", "/cfg/node/n1") and state.puts[0][2]["physState"] == "POWER_OFF"
    bads = ((0, "n1", "POWER_CYCLE"), (1, "n1", "POWER_ON"), (0, "../x", "POWER_ON"), ("0", "n1", "POWER_ON"))
    for bad in bads:
        with pytest.raises(FetchError):
            result(adapter.power(*bad))


def test_nodes_page_lists_groups_and_both_states() -> None:
    class Lists:
        def get_json(self, server: Server, path: str) -> Deferred[Any]:
            first = {"id": "n1", "nodename": "a", "physState": "POWER_ON", "groups": ["rack1", "gpu"]}
            nodes = {
                "/cfg/nodes": [first, {"id": "n2", "group": "rack2"}],
                "/dsc/nodes": [{"id": "n1", "physState": "POWER_OFF", "runState": "INIT"}],
            }
            if path == "/sme/frozen":
                return fail(Unavailable(path))
            if path == "/groups":
                return succeed({"groups": [{"name": "rack9", "nodes": ["n2"]}, {"name": "empty"}]})
            return succeed({"nodes": nodes[path]})

    adapter = NodesAdapter(Lists(), [Server("state", "https://s:1")])  # type: ignore[arg-type]
    [row] = result(adapter.collect())["servers"]
    assert row["frozen"] is None
    n1, n2 = row["nodes"]
    assert (n1["name"], n1["phys"], n1["run"], n1["want_phys"], n1["groups"]) == (
        "a", "POWER_OFF", "INIT", "POWER_ON", ["gpu", "rack1"]
    )
    assert (n2["name"], n2["phys"], n2["groups"]) == ("n2", "PHYS_UNKNOWN", ["rack2", "rack9"])


def test_group_members_include_the_nodes_of_groups_inheriting() -> None:
    groups = [
        {"name": "room", "nodes": ["a"], "parent": ""},
        {"name": "rack", "nodes": ["b"], "parent": "room"},
        {"name": "gpu", "nodes": ["b", "c"], "parent": "rack"},
        {"name": "loop1", "nodes": ["d"], "parent": "loop2"},
        {"name": "loop2", "nodes": [], "parent": "loop1"},
        {"name": "orphan", "nodes": ["e"], "parent": "gone"},
        "junk",
    ]
    assert group_members(groups) == {
        "a": ["room"], "b": ["gpu", "rack", "room"], "c": ["gpu", "rack", "room"],
        "d": ["loop1", "loop2"], "e": ["orphan"],
    }


def test_a_pipelines_default_error_route_is_drawn_on_components_without_their_own() -> None:
    assert error_route("dead_letter") == {"kind": "dead_letter", "target": None, "default": True}
    assert error_route({"pipeline": "audit"}) == {"kind": "pipeline", "target": "audit", "default": True}
    assert error_route(None) is None and error_route({"component": 3}) is None

    class Server_:
        def get_json(self, server: Server, path: str) -> Deferred[Any]:
            answers: dict[str, Any] = {
                "/pipelines": ["p"], "/pipelines/status/p": {"status": ":not_ready"},
                "/pipelines/components/p": [
                    {"name": "a", "on_error": {"kind": "component", "target": "b"}}, {"name": "b"},
                ],
                "/pipelines/definition/p": {"name": "p", "on_error": "dead_letter"},
                "/dead_letters?pipeline=p&limit=50": [],
            }
            return succeed(answers[path])

    adapter = PipelinesAdapter(Server_(), [Server("pipeline", "https://p:1")])  # type: ignore[arg-type]
    [row] = result(adapter.collect())["servers"]
    a, b = row["pipelines"][0]["components"]
    assert a["on_error"] == {"kind": "component", "target": "b"}
    assert b["on_error"] == {"kind": "dead_letter", "target": None, "default": True}


def test_redact_and_node_ids() -> None:
    assert redact({"a": [{"secretKey": "s", "nested": {"token": "t", "keep": 1}}]}) == {
        "a": [{"secretKey": "***", "nested": {"token": "***", "keep": 1}}]
    }
    assert node_id("4b2c-01.x_y") == "4b2c-01.x_y"
    for bad in ("", "../etc", "a/b", "a b", 5, None, "x" * 101):
        with pytest.raises(FetchError):
            node_id(bad)


class Recording(DashboardSocket):
    """A socket whose messages to the browser are kept instead of framed."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict[str, Any]] = []

    def _send_json(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def _socket(access: Access) -> Recording:
    clock = Clock()
    hub = Hub(clock, {"health": Counting()}, 1.0)
    factory = DashboardSocketFactory(
        hub, access, {"node": lambda m: succeed({"ok": 1})},
        {"power": lambda m: succeed({"done": True})}, clock,
    )
    socket = Recording()
    socket.factory = factory
    return socket


def test_socket_messages_roles_and_actions() -> None:
    socket = _socket(Access(viewer_tokens=("v",), operator_tokens=("op",)))
    socket.onMessage(b'{"type": "watch", "page": "health"}', False)
    socket.onMessage(b'{"type": "hello", "token": "nope"}', False)
    socket.onMessage(b'{"type": "hello", "token": "v"}', False)
    socket.onMessage(b'{"type": "watch", "page": "nowhere"}', False)
    socket.onMessage(b'{"type": "node", "id": 7}', False)
    socket.onMessage(b'{"type": "power", "id": 8}', False)
    socket.onMessage(b'{"type": "hello", "token": "op"}', False)
    socket.onMessage(b'{"type": "power", "id": 9}', False)
    socket.onMessage(b'{"type": "launch"}', False)
    assert socket.sent == [
        {"type": "error", "message": "log in first (hello)"},
        {"type": "denied", "message": "unknown token"},
        {"type": "welcome", "role": "viewer", "pages": ["health"]},
        {"type": "error", "message": "no such page"},
        {"type": "reply", "id": 7, "ok": True, "data": {"ok": 1}},
        {"type": "reply", "id": 8, "ok": False, "error": "this needs an operator login"},
        {"type": "welcome", "role": "operator", "pages": ["health"]},
        {"type": "reply", "id": 9, "ok": True, "data": {"done": True}},
        {"type": "error", "message": "unknown message type 'launch'"},
    ]


@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
@settings(max_examples=200, deadline=None)
def test_any_message_from_a_browser_gets_an_answer_not_a_crash(payload: bytes) -> None:
    socket = _socket(Access())
    socket.onMessage(payload, False)
    assert all(m["type"] in ("error", "denied", "welcome", "reply") for m in socket.sent)


def test_place_in_the_pubsub_tree() -> None:
    assert tree_place({"status": "running"}) == NOT_AVAILABLE
    assert tree_place({"role": "node", "upstream": None, "cluster": None}) == {
        "role": "node", "upstream": None, "cluster": None,
    }
    proxy = tree_place({"role": "proxy", "upstream": {"peer": "10.0.0.1:12355", "connected": True, "lag": 0.5,
                                                     "records_in": 9, "secret_detail": 1}})
    assert proxy["upstream"]["peer"] == "10.0.0.1:12355" and "secret_detail" not in proxy["upstream"]
    cluster = tree_place({"role": "cluster", "cluster": {"self": "a", "members": [
        {"node": "a", "healthy": True, "owned_shards": [0, 1]}, {"node": "b", "healthy": False}]}})
    assert cluster["cluster"]["members"] == [
        {"node": "a", "healthy": True, "shards": 2}, {"node": "b", "healthy": False, "shards": 0}
    ]
