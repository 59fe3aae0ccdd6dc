"""The REST API of the original (spec §4.1) on the core Router, with JSON 4xx errors.

A write is answered only once its Cfg change is committed to the database (``durable``), so a
2xx means the change survives a crash; a failed commit answers ``503 STORE_WRITE_FAILED``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from twisted.web.server import Request

from kraken.core.http import HTTPError, Response, Router, query_arg, read_json
from kraken.state import model
from kraken.state.console import ConsoleManager
from kraken.state.discovery import Discovery
from kraken.state.engine import Engine
from kraken.state.groups import Groups, group_from_json, typed_values
from kraken.state.model import EXTENSIONS, ModelError, Node, PhysState, RunState
from kraken.state.modules.base import ActionError
from kraken.state.store import StateStore, StoreError, StoreWriteError
from kraken.state.sync import SyncServerFactory

DOT_TYPE = "text/vnd.graphviz; charset=utf-8"
T = TypeVar("T")


def _node_from(body: Any) -> Node:
    try:
        return model.from_json(body)
    except ModelError as e:
        raise HTTPError(400, "BAD_NODE", str(e)) from None


def _nodes_from(body: Any) -> list[Node]:
    if not isinstance(body, dict) or not isinstance(body.get("nodes"), list):
        raise HTTPError(400, "BAD_NODE_LIST", 'expected {"nodes": [...]}')
    out = []
    for i, item in enumerate(body["nodes"]):
        try:
            out.append(model.from_json(item))
        except ModelError as e:
            raise HTTPError(400, "BAD_NODE", f"nodes[{i}]: {e}") from None
    return out


def _id(text: str) -> str:
    try:
        return model.canonical_id(text)
    except ModelError as e:
        raise HTTPError(400, "BAD_NODE_ID", str(e)) from None


def _store_call(fn: Callable[..., Node], *args: Any) -> dict[str, Any]:
    try:
        return model.to_json(fn(*args))
    except StoreError as e:
        raise HTTPError(e.status, e.code, str(e)) from None
    except ModelError as e:
        raise HTTPError(400, "BAD_NODE", str(e)) from None


def _has_body(request: Request) -> bool:
    content = request.content
    assert content is not None
    content.seek(0, 2)
    return content.tell() > 0


class StateAPI:
    """Routes of the original REST API (plus ``/graph/.../dot`` and ``/sme/path/{id}``)."""

    def __init__(
        self,
        store: StateStore,
        engine: Engine,
        ws_port: Callable[[], int | None],
        durable: Callable[[], Deferred[None]] = lambda: succeed(None),
        groups: Groups | None = None,
        sync: SyncServerFactory | None = None,
        discovery: Discovery | None = None,
        consoles: ConsoleManager | None = None,
    ) -> None:
        self.consoles = consoles
        self.sync = sync
        self.discovery = discovery
        self.store = store
        self.engine = engine
        self.groups = groups or Groups(store, store.bus, engine.clock, lambda url: url in engine.graph.index)
        self.ws_port = ws_port
        self.durable = durable

    def _acknowledged(self, answer: T) -> Deferred[T]:
        """*answer*, once every change made so far is committed."""

        def failed(failure: Failure) -> T:
            failure.trap(StoreWriteError)
            raise HTTPError(503, "STORE_WRITE_FAILED", str(failure.value))

        written = self.groups.written().addCallback(lambda _: self.durable())
        return written.addCallbacks(lambda _: answer, failed)

    def router(self) -> Router:
        r = Router()
        r.route("GET", "/cfg/nodes", lambda req: self._all(self.store.cfg))
        r.route("GET", "/dsc/nodes", lambda req: self._all(self.store.dsc))
        r.route("POST", "/cfg/nodes", self.create_nodes)
        r.route("PUT", "/cfg/nodes", lambda req: self.update_nodes(req, self.store.update))
        r.route("PUT", "/dsc/nodes", lambda req: self.update_nodes(req, self.store.update_dsc))
        r.route("GET", "/cfg/node/{node_id}", lambda req, node_id: _store_call(self.store.read, _id(node_id)))
        r.route(
            "GET", "/dsc/node/{node_id}", lambda req, node_id: _store_call(self.store.read_dsc, _id(node_id))
        )
        for path in ("/cfg/node", "/cfg/node/{node_id}"):
            r.route("POST", path, self.create_node)
            r.route("PUT", path, lambda req, node_id=None: self.update_node(req, self.store.update))
        for path in ("/dsc/node", "/dsc/node/{node_id}"):
            r.route("PUT", path, lambda req, node_id=None: self.update_node(req, self.store.update_dsc))
        r.route("DELETE", "/cfg/node/{node_id}", self.delete_node)
        r.route("GET", "/graph/json", lambda req: self.engine.graph.to_json(self.engine.graph.graph()))
        r.route("GET", "/graph/dot", lambda req: self._dot(self.engine.graph.graph()))
        r.route("GET", "/graph/node/{node_id}/json", self.node_graph)
        r.route("GET", "/graph/node/{node_id}/dot", self.node_graph_dot)
        r.route("GET", "/enumerables", self.enumerables)
        r.route("GET", "/ws", self.ws)
        r.route("GET", "/node/{node_id}/console", self.console)
        r.route("GET", "/consoles", self.list_consoles)
        r.route(["GET", "POST"], "/sme/freeze", self.freeze)
        r.route(["GET", "POST"], "/sme/thaw", self.thaw)
        r.route("GET", "/sme/frozen", lambda req: {"frozen": self.engine.frozen})
        r.route("GET", "/sme/path/{node_id}", self.path)
        r.route("POST", "/action/node/{node_id}/{action}", self.act)
        r.route("GET", "/groups", self.list_groups)
        r.route("GET", "/group/{name}", lambda req, name: self._group_call(self.groups.get, name).to_json())
        r.route("PUT", "/group/{name}", self.put_group)
        r.route("DELETE", "/group/{name}", self.delete_group)
        r.route("POST", "/group/{name}/set", self.group_set)
        r.route("GET", "/tree/node/{node_id}", self.tree_node)
        r.route("GET", "/discovered", self.discovered)
        r.route("POST", "/discovered/{node_id}/accept", self.accept)
        r.route("DELETE", "/discovered/{node_id}", self.reject)
        r.route("POST", "/discovery/scan", self.scan)
        r.route("GET", "/operations", self.list_operations)
        r.route("GET", "/operation/{op_id}", self.operation)
        return r

    @staticmethod
    def _group_call(fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except StoreError as e:
            raise HTTPError(e.status, e.code, str(e)) from None
        except ModelError as e:
            raise HTTPError(400, "BAD_GROUP", str(e)) from None

    def list_groups(self, request: Request) -> dict[str, Any]:
        node = query_arg(request, "node")
        names = self.groups.groups_of(_id(node)) if node else sorted(self.groups.groups)
        return {"groups": [self.groups.groups[n].to_json() for n in names]}

    def put_group(self, request: Request, name: str) -> Deferred[dict[str, Any]]:
        group = self._group_call(group_from_json, name, read_json(request))
        return self._acknowledged(self._group_call(self.groups.put, group).to_json())

    def delete_group(self, request: Request, name: str) -> Deferred[dict[str, Any]]:
        return self._acknowledged(self._group_call(self.groups.delete, name).to_json())

    def group_set(self, request: Request, name: str) -> Deferred[Response]:
        body = read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("values"), dict) or not body["values"]:
            raise HTTPError(400, "BAD_GROUP", 'expected {"values": {field or URL: value, ...}}')
        values = self._group_call(typed_values, body["values"])
        op = self._group_call(self.groups.set, name, values)
        return self._acknowledged(Response(202, {"operation": op.to_json()}))

    def tree_node(self, request: Request, node_id: str) -> dict[str, Any]:
        """Where the node sits: its path from the top by Cfg ``parentId`` and, on a parent, the
        connected child kraken its sync goes through now."""
        nid = _id(node_id)
        cfg = self.store.cfg
        if nid not in cfg:
            raise HTTPError(404, "NODE_NOT_FOUND", f"no node {nid}")
        path, cur = [nid], cfg[nid].parent_id
        while cur and cur not in path and len(path) < 64:
            path.append(cur)
            cur = cfg[cur].parent_id if cur in cfg else ""
        path.reverse()
        if path[0] != self.engine.self_id and self.engine.full_state and nid != self.engine.self_id:
            path.insert(0, self.engine.self_id)  # a node without parentId is the full-state kraken's
        link = self.sync.route(nid) if self.sync is not None else None
        return {
            "id": nid,
            "path": path,
            "names": [cfg[n].nodename if n in cfg else "" for n in path],
            "syncedVia": link.node_id if link is not None else None,
        }

    def _discovery(self) -> Discovery:
        if self.discovery is None:
            raise HTTPError(404, "NO_DISCOVERY", "discovery is not configured (state.discovery)")
        return self.discovery

    def discovered(self, request: Request) -> dict[str, Any]:
        d = self._discovery()
        return {
            "nodes": [d.candidates[k].to_json() for k in sorted(d.candidates)],
            "scanning": d.running_scan is not None,
            "scans": d.scans,
            "lastScan": d.last.to_json() if d.last is not None else None,
        }

    def accept(self, request: Request, node_id: str) -> Deferred[Response]:
        d = self._discovery()
        body = read_json(request) if _has_body(request) else {}
        if not isinstance(body, dict) or set(body) - {"nodename", "parentId"}:
            raise HTTPError(400, "BAD_ARGUMENT", 'expected {"nodename"?, "parentId"?}')
        nodename, parent = body.get("nodename", ""), body.get("parentId", "")
        if not isinstance(nodename, str) or not isinstance(parent, str):
            raise HTTPError(400, "BAD_ARGUMENT", "nodename and parentId are strings")
        node = self._group_call(d.accept, _id(node_id), nodename, parent)
        return self._acknowledged(Response(201, model.to_json(node)))

    def reject(self, request: Request, node_id: str) -> dict[str, Any]:
        return self._group_call(self._discovery().reject, _id(node_id)).to_json()

    def scan(self, request: Request) -> Response:
        d = self._discovery()
        d.scan()
        return Response(202, {"scanning": True, "scans": d.scans})

    def list_operations(self, request: Request) -> dict[str, Any]:
        return {"operations": [op.to_json() for _, op in sorted(self.groups.operations.items())]}

    def operation(self, request: Request, op_id: str) -> dict[str, Any]:
        op = self.groups.operations.get(int(op_id)) if op_id.isdigit() else None
        if op is None:
            raise HTTPError(404, "OPERATION_NOT_FOUND", f"no operation {op_id!r} (the last 100 are kept)")
        return op.to_json()

    def act(self, request: Request, node_id: str, action: str) -> Deferred[dict[str, Any]]:
        nid = _id(node_id)
        body = read_json(request) if _has_body(request) else {}
        if not isinstance(body, dict):
            raise HTTPError(400, "BAD_ARGUMENT", "the action's arguments must be a JSON object")
        try:
            d = self.engine.act(nid, action, body)
        except ActionError as e:
            raise HTTPError(e.status, e.code, str(e)) from None

        def failed(failure: Failure) -> NoReturn:
            failure.trap(ActionError)
            e = failure.value
            assert isinstance(e, ActionError)
            raise HTTPError(e.status, e.code, str(e))

        return d.addCallbacks(lambda result: {"node": nid, "action": action, "result": result}, failed)

    @staticmethod
    def _all(where: dict[str, Node]) -> dict[str, Any]:
        return {"nodes": [model.to_json(where[k]) for k in sorted(where)]}

    def create_nodes(self, request: Request) -> Deferred[Response]:
        nodes = _nodes_from(read_json(request))
        created, errors = [], []
        for node in nodes:
            try:
                created.append(model.to_json(self.store.create(node)))
            except StoreError as e:
                errors.append({"id": node.id, "code": e.code, "message": str(e)})
        body: dict[str, Any] = {"nodes": created}
        if errors:
            body["errors"] = errors
        return self._acknowledged(Response(201 if created else 409, body))

    def update_nodes(self, request: Request, update: Callable[[Node], Node]) -> Deferred[dict[str, Any]]:
        nodes = _nodes_from(read_json(request))
        missing = [n.id for n in nodes if n.id not in self.store.cfg]
        if missing:
            raise HTTPError(404, "NODE_NOT_FOUND", f"no node {missing[0]}", detail={"missing": missing})
        return self._acknowledged({"nodes": [model.to_json(update(n)) for n in nodes]})

    def create_node(self, request: Request, node_id: str | None = None) -> Deferred[Response]:
        node = _node_from(read_json(request))
        return self._acknowledged(Response(201, _store_call(self.store.create, node)))

    def update_node(self, request: Request, update: Callable[[Node], Node]) -> Deferred[dict[str, Any]]:
        return self._acknowledged(_store_call(update, _node_from(read_json(request))))

    def delete_node(self, request: Request, node_id: str) -> Deferred[dict[str, Any]]:
        return self._acknowledged(_store_call(self.store.delete, _id(node_id)))

    def _dot(self, g: Any) -> Response:
        return Response(200, self.engine.graph.to_dot(g).encode(), {"Content-Type": DOT_TYPE})

    def _node_graph(self, node_id: str) -> tuple[Any, dict[str, Any]]:
        nid = _id(node_id)
        cfg = self.store.cfg.get(nid)
        if cfg is None:
            raise HTTPError(404, "NODE_NOT_FOUND", f"no node {nid}")
        ap = self.engine.paths.get(nid)
        if ap is None:
            raise HTTPError(409, "NO_PATH", f"node {nid} has no active path")
        g = self.engine.graph.node_graph(cfg)
        return g, self.engine.graph.to_json(g, ap.chain, -1 if ap.complete else ap.cur)

    def node_graph(self, request: Request, node_id: str) -> dict[str, Any]:
        return self._node_graph(node_id)[1]

    def node_graph_dot(self, request: Request, node_id: str) -> Response:
        g, _ = self._node_graph(node_id)
        return self._dot(g)

    def path(self, request: Request, node_id: str) -> dict[str, Any]:
        nid = _id(node_id)
        found = self.engine.path_json(nid)
        if found is None:
            raise HTTPError(409, "NO_PATH", f"node {nid} has no active path")
        return found

    def enumerables(self, request: Request) -> list[dict[str, Any]]:
        out = [
            {"name": "PhysState", "url": "physState", "options": {str(m.value): m.name for m in PhysState}},
            {"name": "RunState", "url": "runState", "options": {str(m.value): m.name for m in RunState}},
        ]
        for url in sorted(EXTENSIONS):
            for path, enum in sorted(EXTENSIONS[url].enums.items()):
                out.append(
                    {
                        "name": enum.__name__,
                        "url": url + path,
                        "options": {str(m.value): m.name for m in enum},
                    }
                )
        return out

    def ws(self, request: Request) -> dict[str, Any]:
        port = self.ws_port()
        if port is None:
            raise HTTPError(503, "NO_WEBSOCKET", "the websocket listener is not running")
        host = (request.getHeader("host") or "127.0.0.1").rsplit(":", 1)[0]
        return {"host": host, "port": str(port), "url": "/ws"}

    def console(self, request: Request, node_id: str) -> dict[str, Any]:
        """Where the node's console websocket is, once the node is known to have one (the
        websocket checks again, and then asks the BMC)."""
        nid = _id(node_id)
        if self.consoles is None:
            raise HTTPError(404, "NO_CONSOLES", "this server serves no consoles")
        try:
            self.consoles.check(nid)
        except ActionError as e:
            raise HTTPError(e.status, e.code, str(e)) from None
        where = self.ws(request)
        where["url"] = f"/node/{nid}/console"
        where["sessions"] = [s.to_json() for s in self.consoles.by_node.get(nid, [])]
        return where

    def list_consoles(self, request: Request) -> dict[str, Any]:
        sessions = self.consoles.by_node.values() if self.consoles is not None else []
        limits = self.consoles.limits if self.consoles is not None else None
        return {
            "sessions": [s.to_json() for group in sessions for s in group],
            "perNode": limits.per_node if limits else 0,
            "max": limits.sessions if limits else 0,
        }

    def freeze(self, request: Request) -> dict[str, Any]:
        self.engine.freeze()
        return {"frozen": True}

    def thaw(self, request: Request) -> dict[str, Any]:
        self.engine.thaw()
        return {"frozen": False}
