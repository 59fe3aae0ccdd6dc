"""Builds the state engine from a config: stores, persistence, engine, modules, initial state."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from prometheus_client import Counter
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from kraken.state import model
from kraken.state.engine import Engine
from kraken.state.events import EventBus
from kraken.state.groups import Groups, group_from_json
from kraken.state.model import ModelError, Node, PhysState, RunState
from kraken.state.modules.base import Context, Module, Mutation, declare
from kraken.state.store import SqliteCfg, StateStore

log = Logger(namespace="kraken.state")

SSE = "sse"
SSE_DISCOVERABLES = {
    "/RunState": {"INIT", "SYNC", "ERROR"},
    "/PhysState": {"PHYS_HANG", "POWER_ON"},
}


def sse_mutations(timeout: float) -> list[Mutation]:
    """The sync engine's own step: a booted node's agent phones home (performed by the child)."""
    return [
        declare(
            SSE,
            "INITtoSYNC",
            {"/RunState": ("INIT", "SYNC")},
            requires={"/PhysState": "POWER_ON"},
            context=Context.CHILD,
            timeout=timeout,
            fail_to=("/PhysState", "PHYS_HANG"),
        )
    ]


class StateError(Exception):
    """The initial state (database or state file) cannot be used."""


def read_state_file(path: str | Path) -> list[Node]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise StateError(f"cannot read state file {path}: {e.strerror}") from None
    except ValueError as e:
        raise StateError(f"state file {path} is not JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise StateError(f'state file {path}: expected {{"nodes": [...]}}')
    nodes = []
    for i, item in enumerate(data["nodes"]):
        try:
            nodes.append(model.from_json(item))
        except ModelError as e:
            raise StateError(f"state file {path}: nodes[{i}]: {e}") from None
    return nodes


class StateService(Service):
    """Owns the bus, the stores, the engine and its modules for one kraken."""

    def __init__(
        self,
        modules: list[Module],
        clock: IReactorTime,
        self_id: str = model.DEFAULT_ID,
        db: str | None = None,
        state_file: str | None = None,
        full_state: bool = True,
        freeze: bool = False,
        retry_delay: float = 10.0,
        sse_timeout: float = 90.0,
        metrics: Mapping[str, Counter] | None = None,
    ) -> None:
        self.clock = clock
        self.self_id = model.canonical_id(self_id)
        self.full_state = full_state
        self.start_frozen = freeze
        self.bus = EventBus()
        self.store = StateStore(self.bus)
        self.engine = Engine(
            self.store,
            self.bus,
            clock,
            modules,
            self.self_id,
            full_state=full_state,
            retry_delay=retry_delay,
            sse_mutations=sse_mutations(sse_timeout),
        )
        self.engine.allow_discoveries(SSE, SSE_DISCOVERABLES)
        self.groups = Groups(self.store, self.bus, clock, lambda url: url in self.engine.graph.index)
        corrupt = (metrics or {}).get("corrupt_entries")
        skipped = corrupt.labels("cfg").inc if corrupt is not None else None
        self.persist = SqliteCfg(db, self.store, clock, on_skipped=skipped) if db else None
        self.initial = read_state_file(state_file) if state_file else []
        self.loaded = False
        self.load()

    def load(self) -> None:
        """Stored Cfg first, then state-file nodes the database does not have, then ourselves."""
        if self.persist is not None:
            for node in self.persist.load():
                self.store.create(node)
            self.persist.attach()
            for body in self.persist.load_groups():
                try:
                    group = group_from_json(str(body.get("name")), body)
                except ModelError as e:
                    log.error("skipping stored group {name}: {error}", name=body.get("name"), error=str(e))
                    continue
                group.nodes = [n for n in group.nodes if n in self.store.cfg]
                self.groups.load([group])
            groups = self.groups.groups
            self.persist.attach_groups(
                self.groups.writers, lambda name: groups[name].to_json() if name in groups else None
            )
        for node in self.initial:
            if node.id != self.self_id and node.id not in self.store.cfg:
                self.store.create(node)
        self._ensure_self()
        self.loaded = True

    def durable(self) -> Deferred[None]:
        """Fires once every Cfg change made so far is on disk (at once without a database)."""
        return self.persist.durable() if self.persist is not None else succeed(None)

    def _ensure_self(self) -> None:
        own = next((n for n in self.initial if n.id == self.self_id), None)
        if self.self_id not in self.store.cfg:
            node = own.copy() if own is not None else Node(self.self_id)
            if not node.nodename:
                node.nodename = "kraken"
            self.store.create(node)
        elif own is not None:
            self.store.update(own)
        # A running kraken is powered and its agent is up: say so in both stores.
        for dsc in (False, True):
            self.store.set_values(
                self.self_id, [("/PhysState", PhysState.POWER_ON), ("/RunState", RunState.SYNC)], dsc=dsc
            )

    def startService(self) -> None:
        super().startService()
        for si in sorted(self.engine.modules):
            self.engine.start_module(si)
        if self.full_state and not self.start_frozen:
            self.engine.thaw()
        log.info(
            "state engine {id} up with {n} nodes ({mode}, {frozen})",
            id=self.self_id,
            n=len(self.store.cfg),
            mode="full state" if self.full_state else "child",
            frozen="frozen" if self.engine.frozen else "thawed",
        )

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self.engine.stop_modules()
        return self.persist.close() if self.persist is not None else None
