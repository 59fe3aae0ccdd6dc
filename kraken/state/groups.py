"""Named groups of nodes (profiles) whose Cfg values their members inherit, and bulk operations.

A group has members (node ids), an optional parent group and values (Cfg URLs or JSON field
names → values). A node inherits the values of every group it is in and of their ancestors,
ancestors first, a nearer group over a farther one, groups of one depth in name order. The
inherited values are written into the members' Cfg when a group is stored or changed (so the
engine, sync and persistence see an ordinary Cfg); a node's own later change stands until a
group value it inherits changes again.

A bulk ``set`` on a group merges values into the group and writes them into every member (a
slice of members per reactor turn, see :meth:`Groups.apply`): an :class:`Operation` then counts
members whose Dsc reached the values, and those that failed (PHYS_HANG or PHYS_ERROR), and
reports its progress as OPERATION events.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.core.turns import in_turns
from kraken.state import model
from kraken.state.events import ChangeKind, Event, EventBus, EventType, OperationData
from kraken.state.model import FIELDS, ModelError, Node, PhysState
from kraken.state.store import StateStore, StoreError, fire_waiting

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MAX_GROUPS = 10_000
MAX_DEPTH = 16
_JSON_TO_URL = {json_name: f"/{go}" for go, (_a, _e, json_name) in FIELDS.items()}
FAILED = (PhysState.PHYS_HANG, PhysState.PHYS_ERROR)
APPLY_PER_TURN = 10_000  # members whose inherited values are written per reactor turn

log = Logger(namespace="kraken.state.groups")


def json_values(values: dict[str, Any]) -> dict[str, Any]:
    return {url: model.printable(v) if isinstance(v, IntEnum) else v for url, v in values.items()}


def value_url(key: str) -> str:
    """A value's URL from a URL or a node JSON field name (``physState`` → ``/PhysState``)."""
    if key.startswith("/") or key.startswith(model.TYPE_PREFIX):
        return key
    url = _JSON_TO_URL.get(key)
    if url is None:
        raise ModelError(f"unknown field {key!r} (use a node JSON field name or a value URL)")
    return url


def typed_values(values: Any) -> dict[str, Any]:
    """Validated ``{url: typed value}``; a :class:`ModelError` names the first bad one."""
    if not isinstance(values, dict):
        raise ModelError("values must be an object of field or URL → value")
    out: dict[str, Any] = {}
    probe = Node(model.DEFAULT_ID)
    for key, value in values.items():
        url = value_url(str(key))
        if url in ("/ParentId",) or url.startswith("/Services"):
            raise ModelError(f"{key}: a group cannot set {url}")
        typed = model.value_of(url, value)
        model.set_value(probe, url, typed)
        out[url] = typed
    return out


@dataclass
class Group:
    name: str
    nodes: list[str] = field(default_factory=list)
    parent: str = ""
    values: dict[str, Any] = field(default_factory=dict)  # url -> typed value

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "nodes": list(self.nodes),
            "parent": self.parent,
            "values": json_values(self.values),
        }


def group_from_json(name: str, body: Any) -> Group:
    if not NAME.match(name):
        raise ModelError(f"group name {name!r}: letters, digits, '.', '_' and '-', at most 63")
    if not isinstance(body, dict):
        raise ModelError("a group must be a JSON object")
    unknown = set(body) - {"name", "nodes", "parent", "values"}
    if unknown:
        raise ModelError(f"group: unknown field {sorted(unknown)[0]!r}")
    if body.get("name", name) != name:
        raise ModelError(f"group body names {body['name']!r}, the URL {name!r}")
    nodes = body.get("nodes", [])
    if not isinstance(nodes, list):
        raise ModelError("group.nodes: expected a list of node ids")
    parent = body.get("parent") or ""
    if not isinstance(parent, str):
        raise ModelError("group.parent: expected a group name")
    ids = sorted({model.canonical_id(n) for n in nodes})
    return Group(name, ids, parent, typed_values(body.get("values", {})))


@dataclass
class Operation:
    id: int
    group: str
    values: dict[str, Any]
    nodes: set[str]
    started: float
    done: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    finished: float | None = None
    expected: list[tuple[str, Any]] = field(default_factory=list)  # the discoverable (url, value)s

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "values": json_values(self.values),
            "total": len(self.nodes),
            "done": len(self.done),
            "failed": len(self.failed),
            "complete": self.finished is not None,
            "seconds": round((self.finished or 0) - self.started, 3) if self.finished else None,
        }


class Groups:
    """The groups of one kraken and the bulk operations on them; reactor thread only."""

    def __init__(
        self,
        store: StateStore,
        bus: EventBus,
        clock: IReactorTime,
        discoverable: Callable[[str], bool],
        every: float = 0.2,
        keep: int = 100,
    ) -> None:
        self.store = store
        self.bus = bus
        self.clock = clock
        self.discoverable = discoverable
        self.every = every
        self.keep = keep
        self.groups: dict[str, Group] = {}
        self._member_of: dict[str, set[str]] = {}  # node -> names of the groups it is in
        self.writers: list[Callable[[str], None]] = []
        self.operations: dict[int, Operation] = {}
        self._ids = itertools.count(1)
        self._watch: dict[str, set[int]] = {}  # node -> running operations
        self._report: dict[int, IDelayedCall] = {}
        self._applying = 0
        self._written_waiters: list[Deferred[None]] = []
        bus.subscribe("groups", [EventType.STATE_CHANGE], self._changed)

    # -- groups ------------------------------------------------------------------------------------
    def load(self, groups: Iterable[Group]) -> None:
        for g in groups:
            self.groups[g.name] = g
        self._reindex()

    def _reindex(self) -> None:
        index: dict[str, set[str]] = {}
        for g in self.groups.values():
            for node_id in g.nodes:
                index.setdefault(node_id, set()).add(g.name)
        self._member_of = index

    def get(self, name: str) -> Group:
        g = self.groups.get(name)
        if g is None:
            raise StoreError(404, "GROUP_NOT_FOUND", f"no group {name!r}")
        return g

    def put(self, group: Group) -> Group:
        """Store (create or replace) a group and write what its members inherit into their Cfg."""
        if group.name not in self.groups and len(self.groups) >= MAX_GROUPS:
            raise StoreError(409, "TOO_MANY_GROUPS", f"at most {MAX_GROUPS} groups")
        missing = [n for n in group.nodes if n not in self.store.cfg]
        if missing:
            raise StoreError(404, "NODE_NOT_FOUND", f"no node {missing[0]} (of {len(missing)} unknown)")
        if group.parent:
            self.get(group.parent)
            seen, cur = {group.name}, group.parent
            while cur:
                if cur in seen or len(seen) > MAX_DEPTH:
                    raise StoreError(
                        409, "GROUP_CYCLE", f"group {group.name}'s parents loop or nest too deep"
                    )
                seen.add(cur)
                cur = self.groups[cur].parent if cur in self.groups else ""
        self.groups[group.name] = group
        self._reindex()
        self._written(group.name)
        self.apply(self.members(group.name))
        return group

    def delete(self, name: str) -> Group:
        g = self.get(name)
        children = sorted(c.name for c in self.groups.values() if c.parent == name)
        if children:
            raise StoreError(409, "GROUP_HAS_CHILDREN", f"groups {', '.join(children)} inherit from {name}")
        del self.groups[name]
        self._reindex()
        self._written(name)
        return g

    def _written(self, name: str) -> None:
        for writer in self.writers:
            writer(name)

    def members(self, name: str) -> set[str]:
        """The nodes of *name* and of every group that inherits from it."""
        out = set(self.get(name).nodes)
        for g in self.groups.values():
            if g.parent == name:
                out |= self.members(g.name)
        return out

    def chain(self, name: str) -> list[Group]:
        """*name* and its ancestors, farthest first."""
        out: list[Group] = []
        cur = name
        while cur and cur in self.groups and len(out) <= MAX_DEPTH:
            out.append(self.groups[cur])
            cur = self.groups[cur].parent
        return out[::-1]

    def inherited(self, node_id: str) -> dict[str, Any]:
        """The values *node_id* inherits: by depth (ancestors first), then group name."""
        ranked: list[tuple[int, str, dict[str, Any]]] = []
        for name in self._member_of.get(node_id, ()):
            for depth, link in enumerate(self.chain(name)):
                ranked.append((depth, link.name, link.values))
        out: dict[str, Any] = {}
        for _, _, values in sorted(ranked, key=lambda r: (r[0], r[1])):
            out.update(values)
        return out

    def groups_of(self, node_id: str) -> list[str]:
        return sorted(self._member_of.get(node_id, ()))

    def apply(self, nodes: Iterable[str], then: Callable[[Sequence[str]], None] | None = None) -> None:
        """Write what each of *nodes* inherits into its Cfg, :data:`APPLY_PER_TURN` nodes per reactor
        turn (the first ones at once; *then* is called on each slice once it is written): sync
        links send the first nodes down while the rest are written, and the API stays served.
        :meth:`written` tells when every apply started so far is done."""

        def write(chunk: Sequence[str]) -> None:
            for node_id in chunk:
                values = self.inherited(node_id)
                if values and node_id in self.store.cfg:
                    self.store.set_values(node_id, list(values.items()))
            if then is not None:
                then(chunk)

        self._applying += 1
        in_turns(self.clock, sorted(nodes), write, APPLY_PER_TURN).addBoth(self._applied)

    def _applied(self, result: Failure | None) -> None:
        self._applying -= 1
        if isinstance(result, Failure):
            log.failure("writing a group's values failed", result)
        if not self._applying:
            waiting, self._written_waiters = self._written_waiters, []
            fire_waiting(waiting)

    def written(self) -> Deferred[None]:
        """Fires once every group apply started so far has written all its nodes."""
        if not self._applying:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._written_waiters.append(d)
        return d

    # -- bulk operations ---------------------------------------------------------------------------
    def set(self, name: str, values: dict[str, Any]) -> Operation:
        """Merge *values* into group *name*, write them into every member; track the operation."""
        group = self.get(name)
        nodes = self.members(name)
        if not nodes:
            raise StoreError(409, "EMPTY_GROUP", f"group {name!r} has no nodes")
        group.values.update(values)
        self._written(name)
        op = Operation(next(self._ids), name, dict(values), set(nodes), self.clock.seconds())
        op.expected = [(url, value) for url, value in op.values.items() if self.discoverable(url)]
        self.operations[op.id] = op
        while len(self.operations) > self.keep:
            oldest = min(self.operations)
            if self.operations[oldest].finished is None:
                break
            del self.operations[oldest]
        for node_id in nodes:
            self._watch.setdefault(node_id, set()).add(op.id)
        last = max(nodes)

        def check(chunk: Sequence[str]) -> None:
            for node_id in chunk:
                self._check(op, node_id)
            if chunk[-1] == last and op.finished is None:
                self._progress(op, now=True)

        self.apply(nodes, check)
        return op

    def _reached(self, op: Operation, node_id: str) -> bool:
        dsc = self.store.dsc.get(node_id)
        if dsc is None:
            return False
        return all(model.get_value(dsc, url) == value for url, value in op.expected)

    def _check(self, op: Operation, node_id: str) -> None:
        if op.finished is not None:
            return
        before = (len(op.done), len(op.failed))
        if node_id not in self.store.dsc:
            op.nodes.discard(node_id)
            op.done.discard(node_id)
            op.failed.discard(node_id)
        elif self._reached(op, node_id):
            op.done.add(node_id)
            op.failed.discard(node_id)
        else:
            op.done.discard(node_id)
            if self.store.dsc[node_id].phys_state in FAILED:
                op.failed.add(node_id)
            else:
                op.failed.discard(node_id)
        if (len(op.done), len(op.failed)) != before or not op.nodes:
            self._progress(op, now=len(op.done) == len(op.nodes))

    def _changed(self, event: Event) -> None:
        kind = event.data.kind
        if kind is not ChangeKind.UPDATE and kind is not ChangeKind.DELETE:
            return
        node_id, _, path = event.url.partition(":")
        if kind is ChangeKind.DELETE:
            for name in sorted(self._member_of.pop(node_id, ())):
                self.groups[name].nodes.remove(node_id)
                self._written(name)
        ops = self._watch.get(node_id)
        if not ops:
            return
        for op_id in list(ops):
            op = self.operations.get(op_id)
            if op is None or op.finished is not None:
                ops.discard(op_id)
                continue
            relevant = path in op.values or path == "/PhysState" or any(u.startswith(path) for u in op.values)
            if kind is ChangeKind.DELETE or relevant:
                self._check(op, node_id)

    def _progress(self, op: Operation, now: bool = False) -> None:
        """An OPERATION event now (start, end) or at most every ``every`` seconds meanwhile."""
        if len(op.done) == len(op.nodes) and op.finished is None:
            op.finished = self.clock.seconds()
            for node_id in op.nodes:
                watching = self._watch.get(node_id)
                if watching is not None:
                    watching.discard(op.id)
                    if not watching:
                        del self._watch[node_id]
            now = True
        if now:
            pending = self._report.pop(op.id, None)
            if pending is not None and pending.active():
                pending.cancel()
            self._emit(op)
        elif op.id not in self._report:
            self._report[op.id] = self.clock.callLater(self.every, self._emit_later, op)

    def _emit_later(self, op: Operation) -> None:
        self._report.pop(op.id, None)
        self._emit(op)

    def _emit(self, op: Operation) -> None:
        self.bus.emit_one(Event(EventType.OPERATION, f"/Operations/{op.id}", OperationData(op.to_json())))
