"""Nodes page: every state engine's nodes (Cfg and Dsc), a node's differences and mutation path,
and the power action (an operator's Cfg change of ``physState``)."""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks

from kraken.dashboard.adapters import each, optional
from kraken.dashboard.sources import Fetcher, FetchError, Server

POWER_STATES = ("POWER_ON", "POWER_OFF")
MAX_NODES = 5000
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def node_id(text: Any) -> str:
    if not isinstance(text, str) or not _NODE_ID.match(text):
        raise FetchError("a node id is letters, digits, '.', '_' and '-'")
    return text


def _groups(node: dict[str, Any]) -> list[str]:
    """The groups a node says it belongs to (``groups`` list or ``group`` name), if any; the
    state engine's ``GET /groups`` (named groups listing their nodes) adds to these."""
    found = node.get("groups", node.get("group"))
    if isinstance(found, str):
        return [found]
    if isinstance(found, list):
        return [str(g) for g in found]
    return []


def group_members(groups: list[Any]) -> dict[str, list[str]]:
    """Node id -> the groups it is a member of, from ``GET /groups``: a group's members are its
    own nodes and those of every group inheriting from it (as the state engine's bulk
    operations count them)."""
    named = {str(g["name"]): g for g in groups if isinstance(g, dict) and "name" in g}
    member_of: dict[str, set[str]] = {}
    for name, group in named.items():
        ancestors, cur = [name], group
        while isinstance(cur.get("parent"), str) and cur["parent"] in named and len(ancestors) <= 16:
            if cur["parent"] in ancestors:
                break
            ancestors.append(cur["parent"])
            cur = named[cur["parent"]]
        nodes = group.get("nodes")
        for nid in nodes if isinstance(nodes, list) else []:
            member_of.setdefault(str(nid), set()).update(ancestors)
    return {nid: sorted(names) for nid, names in member_of.items()}


STATE_KEYS = ("physState", "runState", "busy")
SECRET_KEYS = ("password", "secret", "token", "key")


def redact(value: Any) -> Any:
    """*value* with every field whose name looks secret (a BMC password...) replaced by ``"***"``."""
    if isinstance(value, dict):
        return {
            k: "***" if any(word in k.lower() for word in SECRET_KEYS) and not isinstance(v, (dict, list))
            else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


class NodesAdapter:
    def __init__(self, fetcher: Fetcher, servers: list[Server]) -> None:
        self.fetcher = fetcher
        self.servers = servers

    @inlineCallbacks
    def _read(self, server: Server) -> Any:
        cfg = yield self.fetcher.get_json(server, "/cfg/nodes")
        dsc = yield self.fetcher.get_json(server, "/dsc/nodes")
        frozen = yield optional(self.fetcher.get_json(server, "/sme/frozen"), {})
        groups = yield optional(self.fetcher.get_json(server, "/groups"), {})
        member_of = group_members(groups.get("groups", []) if isinstance(groups, dict) else [])
        found = {n["id"]: n for n in dsc.get("nodes", [])}
        nodes = []
        for node in cfg.get("nodes", [])[:MAX_NODES]:
            seen = found.get(node["id"], {})
            nodes.append(
                {
                    "id": node["id"],
                    "name": node.get("nodename") or node["id"][:8],
                    "platform": node.get("platform", ""),
                    "phys": seen.get("physState", "PHYS_UNKNOWN"),
                    "run": seen.get("runState", "UNKNOWN"),
                    "want_phys": node.get("physState", "PHYS_UNKNOWN"),
                    "want_run": node.get("runState", "UNKNOWN"),
                    "groups": sorted(set(_groups(node) + member_of.get(node["id"], []))),
                }
            )
        return {"nodes": nodes, "frozen": frozen.get("frozen")}

    def collect(self) -> Deferred[dict[str, Any]]:
        return each(self.servers, self._read).addCallback(lambda rows: {"servers": rows})

    def server(self, index: Any) -> Server:
        if not isinstance(index, int) or not 0 <= index < len(self.servers):
            raise FetchError(f"no state server {index!r}")
        return self.servers[index]

    @inlineCallbacks
    def detail(self, index: Any, node_id_text: Any) -> Any:
        """Cfg and Dsc of one node, the fields where they differ, and its mutation path."""
        server, node_id_ = self.server(index), node_id(node_id_text)
        cfg = yield self.fetcher.get_json(server, f"/cfg/node/{node_id_}")
        dsc = yield self.fetcher.get_json(server, f"/dsc/node/{node_id_}")
        try:
            path = yield self.fetcher.get_json(server, f"/sme/path/{node_id_}")
        except FetchError as e:
            if e.status != 409:
                raise
            path = None
        cfg, dsc = redact(cfg), redact(dsc)
        # The state fields always; others where something was discovered and it differs.
        keys = [k for k in STATE_KEYS if k in cfg or k in dsc]
        keys += sorted(k for k in set(cfg) | set(dsc) if k not in STATE_KEYS and k != "id" and dsc.get(k))
        diff = [
            {"key": k, "cfg": cfg.get(k), "dsc": dsc.get(k), "same": cfg.get(k) == dsc.get(k)} for k in keys
        ]
        return {"cfg": cfg, "dsc": dsc, "diff": diff, "path": path}

    @inlineCallbacks
    def power(self, index: Any, node_id_text: Any, phys: Any) -> Any:
        if phys not in POWER_STATES:
            raise FetchError(f"power state must be one of {', '.join(POWER_STATES)}")
        server, node_id_ = self.server(index), node_id(node_id_text)
        node = yield self.fetcher.get_json(server, f"/cfg/node/{node_id_}")
        node["physState"] = phys
        stored = yield self.fetcher.send_json(server, "PUT", f"/cfg/node/{node_id_}", node)
        return {"id": stored.get("id"), "physState": stored.get("physState")}
