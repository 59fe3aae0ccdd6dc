"""The Cfg (intended) and Dsc (discovered) stores, their diff events, and Cfg persistence in SQLite.

Both stores hold the same node ids: CREATE and DELETE act on both (a new Dsc node starts
empty). Every write diffs against the stored node and emits one STATE_CHANGE event per
changed URL: CFG_UPDATE for Cfg, UPDATE for Dsc; a write that changes nothing emits nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.core.jsontext import compact
from kraken.core.sqlitedb import open_durable
from kraken.state import model
from kraken.state.events import ChangeKind, Event, EventBus, EventType, StateChange
from kraken.state.model import ModelError, Node

log = Logger(namespace="kraken.state.store")


class StoreError(Exception):
    """A store operation that cannot be done (unknown node, duplicate id); ``status`` for HTTP."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _change(kind: ChangeKind, node_id: str, path: str, value: Any) -> Event:
    return Event(EventType.STATE_CHANGE, f"{node_id}:{path}", StateChange(kind, value))


class StateStore:
    """Cfg and Dsc node maps; single-threaded (the reactor thread owns it)."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.cfg: dict[str, Node] = {}
        self.dsc: dict[str, Node] = {}
        self.cfg_writers: list[Any] = []
        self._cfg_text: dict[str, str] = {}

    def _cfg_written(self, node_id: str) -> None:
        self._cfg_text.pop(node_id, None)
        for writer in self.cfg_writers:
            writer(node_id)

    def create(self, node: Node, dsc: Node | None = None) -> Node:
        if node.id in self.cfg:
            raise StoreError(409, "NODE_EXISTS", f"node {node.id} already exists")
        self.cfg[node.id] = node.copy()
        self.dsc[node.id] = dsc.copy() if dsc is not None else Node(node.id)
        self._cfg_written(node.id)
        self.bus.emit_one(_change(ChangeKind.CREATE, node.id, "", node))
        return self.cfg[node.id].copy()

    def cfg_text(self, node_id: str) -> str:
        """The node's Cfg as compact JSON, kept until the node is next written: the Cfg database
        and the sync link to every sub-master above the node write the same text."""
        text = self._cfg_text.get(node_id)
        if text is None:
            text = self._cfg_text[node_id] = compact(model.to_json(self._get(self.cfg, node_id)))
        return text

    def read(self, node_id: str) -> Node:
        return self._get(self.cfg, node_id).copy()

    def read_dsc(self, node_id: str) -> Node:
        return self._get(self.dsc, node_id).copy()

    def _get(self, where: dict[str, Node], node_id: str) -> Node:
        node = where.get(node_id)
        if node is None:
            raise StoreError(404, "NODE_NOT_FOUND", f"no node {node_id}")
        return node

    def ids(self) -> list[str]:
        return sorted(self.cfg)

    def update(self, node: Node) -> Node:
        """Replace a Cfg node; emits CFG_UPDATE per changed URL."""
        return self._replace(self.cfg, node, ChangeKind.CFG_UPDATE)

    def update_dsc(self, node: Node) -> Node:
        return self._replace(self.dsc, node, ChangeKind.UPDATE)

    def take(self, node: Node) -> None:
        """:meth:`update` keeping *node* itself (the caller gives it up: no copies)."""
        self._replace(self.cfg, node, ChangeKind.CFG_UPDATE, owned=True)

    def take_dsc(self, node: Node) -> None:
        """Replace a Dsc node with *node* itself (the caller gives it up: no copies), as
        :meth:`update_dsc` otherwise; for batches of nodes parsed from the sync wire."""
        self._replace(self.dsc, node, ChangeKind.UPDATE, owned=True)

    def _replace(self, where: dict[str, Node], node: Node, kind: ChangeKind, owned: bool = False) -> Node:
        old = self._get(where, node.id)
        changes = model.diff(old, node)
        if not changes:
            return old if owned else old.copy()
        where[node.id] = node if owned else node.copy()
        if kind is ChangeKind.CFG_UPDATE:
            self._cfg_written(node.id)
        self.bus.emit(_change(kind, node.id, path, value) for path, value in changes)
        return node if owned else where[node.id].copy()

    def set_value(self, node_id: str, path: str, value: Any, dsc: bool = False) -> bool:
        """Set one value (typed via the URL's enum); True if it changed anything."""
        where = self.dsc if dsc else self.cfg
        node = self._get(where, node_id)
        value = model.value_of(path, value)
        if model.get_value(node, path) == value:
            return False
        model.set_value(node, path, value)
        kind = ChangeKind.UPDATE if dsc else ChangeKind.CFG_UPDATE
        if not dsc:
            self._cfg_written(node_id)
        self.bus.emit_one(_change(kind, node_id, path, model.get_value(node, path)))
        return True

    def set_values(self, node_id: str, values: Iterable[tuple[str, Any]], dsc: bool = False) -> None:
        """Set several values at once: they are validated first, then applied as one diff."""
        where = self.dsc if dsc else self.cfg
        node = self._get(where, node_id).copy()
        for path, value in values:
            model.set_value(node, path, model.value_of(path, value))
        self._replace(where, node, ChangeKind.UPDATE if dsc else ChangeKind.CFG_UPDATE, owned=True)

    def delete(self, node_id: str) -> Node:
        node = self._get(self.cfg, node_id)
        del self.cfg[node_id]
        self.dsc.pop(node_id, None)
        self._cfg_written(node_id)
        self.bus.emit_one(_change(ChangeKind.DELETE, node_id, "", node))
        return node


class StoreWriteError(Exception):
    """A commit of Cfg to the database failed; the changes stay dirty and are retried."""


Rows = list[tuple[str, str, str | None]]  # (table, key, JSON or None to delete)


def fire_waiting(waiting: list[Deferred[None]], error: Exception | None = None) -> None:
    """Fire every wait in *waiting* (with *error*, if given), skipping those already cancelled."""
    for d in waiting:
        if d.called:  # a cancelled wait (the client went away)
            continue
        if error is None:
            d.callback(None)
        else:
            d.errback(error)


class SqliteCfg:
    """Keeps the Cfg store in an SQLite file, with group commit.

    Every Cfg change marks its node dirty; the dirty nodes are written in one transaction
    ``delay`` seconds after the first of them (0: at the next reactor turn, so every write that
    arrived within one turn shares one commit). :meth:`durable` gives a Deferred that fires once
    every change made so far is committed; a write is acknowledged only then.

    With a reactor that has threads the commit runs in a worker thread, one at a time: the
    reactor never waits for the disk, and writes that arrive during a commit share the next one.
    With a bare clock (tests) it runs at once.

    The file is in WAL mode with ``synchronous=FULL``: a commit returns once its WAL frames are
    written and fsynced, so an acknowledged write survives kill -9 (which only needs the write)
    and power loss (which needs the fsync); WAL costs one fsync per commit where the rollback
    journal costs several, and readers never block the writer.
    """

    def __init__(
        self,
        path: str | Path,
        store: StateStore,
        clock: IReactorTime,
        delay: float = 0.0,
        on_skipped: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = open_durable(self.path, check_same_thread=False)  # used by one thread at a time
        self.db.execute("CREATE TABLE IF NOT EXISTS cfg (id TEXT PRIMARY KEY, node TEXT NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS groups (name TEXT PRIMARY KEY, body TEXT NOT NULL)")
        self.db.commit()
        self.store = store
        self.clock = clock
        self.delay = delay
        self.retry_delay = 1.0
        self.commits = 0
        self._dirty: set[str] = set()
        self._dirty_groups: set[str] = set()
        self.group_source: Callable[[str], dict[str, Any] | None] | None = None
        self._waiting: list[Deferred[None]] = []  # for the next commit
        self._in_flight: list[Deferred[None]] | None = None  # waits for the commit running now
        self._call: IDelayedCall | None = None
        self.closed = False
        self.on_skipped = on_skipped

    def load(self) -> list[Node]:
        nodes = []
        for node_id, text in self.db.execute("SELECT id, node FROM cfg ORDER BY id"):
            try:
                nodes.append(model.from_json(json.loads(text)))
            except (ModelError, ValueError, TypeError, KeyError, AttributeError) as e:
                log.error("skipping stored node {id} of {path}: {error}", id=node_id, path=str(self.path),
                          error=str(e))
                if self.on_skipped is not None:
                    self.on_skipped()
        return nodes

    def load_groups(self) -> list[dict[str, Any]]:
        out = []
        for name, text in self.db.execute("SELECT name, body FROM groups ORDER BY name"):
            try:
                body = json.loads(text)
                if not isinstance(body, dict):
                    raise ValueError("not an object")
                out.append(body)
            except ValueError as e:
                log.error("skipping stored group {name}: {error}", name=name, error=str(e))
                if self.on_skipped is not None:
                    self.on_skipped()
        return out

    def attach(self) -> None:
        self.store.cfg_writers.append(self.mark)

    def attach_groups(self, writers: list[Callable[[str], None]], source: Callable[[str], Any]) -> None:
        """Keep groups too: *writers* gets our marker, *source(name)* gives a group's JSON or None."""
        self.group_source = source
        writers.append(self.mark_group)

    def mark(self, node_id: str) -> None:
        self._dirty.add(node_id)
        self._schedule(self.delay)

    def mark_group(self, name: str) -> None:
        self._dirty_groups.add(name)
        self._schedule(self.delay)

    def _schedule(self, delay: float) -> None:
        if self._call is None:
            self._call = self.clock.callLater(delay, self.flush)

    def durable(self) -> Deferred[None]:
        """Fires once every Cfg change made so far is committed (at once if none is pending)."""
        if self.closed and (self._dirty or self._dirty_groups):
            return fail(StoreWriteError(f"the Cfg database {self.path} is closed"))
        if self._dirty or self._dirty_groups:
            waiting = self._waiting
        elif self._in_flight is not None:
            waiting = self._in_flight
        else:
            return succeed(None)
        d: Deferred[None] = Deferred()
        waiting.append(d)
        return d

    def flush(self) -> None:
        """Start committing the dirty nodes (after the commit in flight, if there is one)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._in_flight is not None or self.closed:
            return  # _committed starts the next one
        dirty, self._dirty = self._dirty, set()
        dirty_groups, self._dirty_groups = self._dirty_groups, set()
        waiting, self._waiting = self._waiting, []
        if not dirty and not dirty_groups:
            fire_waiting(waiting)
            return
        rows: Rows = []
        for node_id in sorted(dirty):  # the nodes as they are now, serialised in the reactor thread
            text = self.store.cfg_text(node_id) if node_id in self.store.cfg else None
            rows.append(("cfg", node_id, text))
        for name in sorted(dirty_groups):
            body = self.group_source(name) if self.group_source is not None else None
            text = compact(body) if body is not None else None
            rows.append(("groups", name, text))
        self._in_flight = waiting
        if IReactorThreads.providedBy(self.clock):
            reactor = cast(IReactorThreads, self.clock)
            d = deferToThreadPool(reactor, reactor.getThreadPool(), self._write, rows)
        else:
            d = maybeDeferred(self._write, rows)
        d.addBoth(self._committed, dirty, waiting, dirty_groups)

    def _write(self, rows: Rows) -> None:
        sql = {
            "cfg": ("DELETE FROM cfg WHERE id = ?", "INSERT OR REPLACE INTO cfg (id, node) VALUES (?, ?)"),
            "groups": (
                "DELETE FROM groups WHERE name = ?",
                "INSERT OR REPLACE INTO groups (name, body) VALUES (?, ?)",
            ),
        }
        with self.db:
            for table, (delete, upsert) in sql.items():
                mine = [(key, text) for t, key, text in rows if t == table]
                self.db.executemany(delete, [(key,) for key, text in mine if text is None])
                self.db.executemany(upsert, [(key, text) for key, text in mine if text is not None])

    def _committed(
        self,
        result: Failure | None,
        dirty: set[str],
        waiting: list[Deferred[None]],
        dirty_groups: set[str] | None = None,
    ) -> None:
        self._in_flight = None
        if isinstance(result, Failure):
            log.error(
                "cannot commit {n} Cfg nodes: {error}; retrying", n=len(dirty), error=result.getErrorMessage()
            )
            self._dirty |= dirty
            self._dirty_groups |= dirty_groups or set()
            self._schedule(self.retry_delay)
            error = StoreWriteError(f"cannot commit Cfg to {self.path}: {result.getErrorMessage()}")
            fire_waiting(waiting, error)
            return
        self.commits += 1
        fire_waiting(waiting)
        if self._dirty or self._dirty_groups:
            self._schedule(self.delay)

    def close(self) -> Deferred[None]:
        """Commit what is pending, then close the file; fires when closed."""
        self.flush()

        def closed(result: Failure | None) -> None:
            if self._call is not None and self._call.active():
                self._call.cancel()
            self._call = None
            self.closed = True
            self.db.close()

        return self.durable().addBoth(closed)
