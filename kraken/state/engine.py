"""The mutation engine: per node, drive the discovered state along the graph towards Cfg.

Triggered by node CREATE, any Cfg change of a node, thaw (every node) and discoveries that
are not what the active step expects. Each active path runs one step at a time: if the
step's context is ours (SELF: the node is us; CHILD: we are its parent; ALL) the module is
started if needed, a MUTATE event goes out and the module performs it; out-of-context steps
are awaited (another kraken performs them and the result arrives by sync). A step times out
after the mutation's timeout: the engine then devolves to an earlier step starting at the
fail-to value, or declares the fail-to value, interrupts the module and lets recovery follow
from the failed state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.state import model
from kraken.state.deadlines import Deadline, Deadlines
from kraken.state.events import (
    ChangeKind,
    DiscoveryData,
    Event,
    EventBus,
    EventType,
    MutationData,
    MutationKind,
)
from kraken.state.graph import Edge, MutationGraph
from kraken.state.model import Node, RunState, ServiceState
from kraken.state.modules.base import ActionError, Context, Module, Mutation, Starter
from kraken.state.store import StateStore

log = Logger(namespace="kraken.state.engine")


@dataclass
class ActivePath:
    chain: list[Edge]
    cur: int = 0
    seen: set[str] = field(default_factory=set)
    timer: Deadline | None = None
    complete: bool = False
    fired: bool = False

    @property
    def step(self) -> Edge:
        return self.chain[self.cur]

    def cancel(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def to_json(self) -> dict[str, Any]:
        return {
            "cur": self.cur,
            "cmplt": self.complete,
            "chain": [
                {"from": _values_json(e.source), "to": _values_json(e.target), "id": e.mutation.name}
                for e in self.chain
            ],
        }


def _values_json(values: tuple[Any, ...]) -> list[str]:
    return [model.printable(v) for v in values]


class Engine:
    """The State Mutation Engine, plus the discovery whitelist modules report through."""

    def __init__(
        self,
        store: StateStore,
        bus: EventBus,
        clock: IReactorTime,
        modules: list[Module],
        self_id: str,
        full_state: bool = True,
        reactor: IReactorTime | None = None,
        retry_delay: float = 10.0,
        sse_mutations: list[Mutation] | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.clock = clock
        self.deadlines = Deadlines(clock)  # the steps' timeouts
        self.reactor = reactor if reactor is not None else clock
        self.self_id = self_id
        self.full_state = full_state
        self.retry_delay = retry_delay
        self.modules = {m.si: m for m in modules}
        extra = sse_mutations or []
        self.mutations = {m.name: m for mod in modules for m in mod.mutations} | {m.name: m for m in extra}
        self.graph = MutationGraph(self.mutations.values())
        self.discoverables: dict[str, dict[str, set[str]]] = {m.si: m.discoverables() for m in modules}
        self.paths: dict[str, ActivePath] = {}
        self.frozen = True
        self._started: dict[str, str] = {}  # si -> "starting" | "running" | "failed"
        self._parked: dict[str, set[str]] = {}
        self._retries: dict[str, IDelayedCall] = {}
        self._stuck: dict[str, Any] = {}  # node -> the (state, target) already logged as unreachable
        self._any_node = any(m.context is Context.ALL for m in self.mutations.values())
        self.mutations_fired = 0  # counts for /metrics (plain ints: this is the hot path)
        self.discoveries_accepted = 0
        self.mutation_failures = 0
        bus.subscribe("engine", [EventType.STATE_CHANGE], self._on_change)

    # -- module API -------------------------------------------------------------------------------
    @property
    def self_node_id(self) -> str:
        return self.self_id

    def allow_discoveries(self, si: str, table: dict[str, set[str]]) -> None:
        for url, names in table.items():
            self.discoverables.setdefault(si, {}).setdefault(url, set()).update(names)

    def discover(self, si: str, node_id: str, url: str, value: str) -> bool:
        """Record that *si* saw *node_id*'s *url* at *value*; rejected unless whitelisted."""
        allowed = self.discoverables.get(si, {}).get(url)
        if allowed is None or value not in allowed:
            log.error(
                "rejected discovery ({si}) {node}:{url} == {value}: not declared",
                si=si,
                node=node_id,
                url=url,
                value=value,
            )
            return False
        if node_id not in self.store.dsc:
            log.warn("discovery for unknown node {node} ignored", node=node_id)
            return False
        self.bus.emit_one(Event(EventType.DISCOVERY, f"{node_id}:{url}", DiscoveryData(si, value)))
        if not self.store.set_value(node_id, url, value, dsc=True) and not self.frozen:
            # Nothing changed, but it still confirms a step that expects this value (a replay).
            self._discovered(node_id, url, model.value_of(url, value))
        self.discoveries_accepted += 1
        return True

    def fail(self, si: str, node_id: str, mutation_id: str, reason: str) -> None:
        """A module reports that it could not perform the step: handled like a timeout, at once."""
        ap = self.paths.get(node_id)
        name = f"{si}/{mutation_id}"
        if ap is None or ap.complete or ap.step.mutation.name != name:
            log.info("stale failure of {name} on {node}: {reason}", name=name, node=node_id, reason=reason)
            return
        log.warn("{name} failed on {node}: {reason}", name=name, node=node_id, reason=reason)
        self._timeout(node_id, ap)

    def report(self, si: str, node_id: str, extension: str, body: dict[str, Any]) -> bool:
        """Record what *si* read of a node (inventory, its BMC's last error) as a whole Dsc
        extension; only extensions the module declares in ``reports``. True if it changed."""
        module = self.modules.get(si)
        if module is None or extension not in module.reports:
            log.error("rejected report of {ext} by {si}: not declared", ext=extension, si=si)
            return False
        if node_id not in self.store.dsc:
            return False
        return self.store.set_value(node_id, extension, body, dsc=True)

    def act(self, node_id: str, action: str, args: dict[str, Any]) -> Deferred[Any]:
        """Ask the module that drives *node_id*'s platform to perform a one-shot *action*."""
        cfg, offered = self._platform_modules(node_id, "NO_ACTION")
        module = next((m for m in offered if action in m.actions), None)
        if module is None:
            names = sorted({a for m in offered for a in m.actions})
            raise ActionError(
                409, "NO_ACTION", f"platform {cfg.platform!r} offers no action {action!r} (it has: "
                f"{', '.join(names) or 'none'})"
            )
        self._check_drives(cfg, module)
        return maybeDeferred(module.act, action, cfg, args)

    def console(self, node_id: str) -> Starter:
        """How to open *node_id*'s serial console, from the module that drives its platform."""
        cfg, offered = self._platform_modules(node_id, "NO_CONSOLE")
        module = offered[0]
        self._check_drives(cfg, module)
        return module.console(cfg)

    def _platform_modules(self, node_id: str, code: str) -> tuple[Node, list[Module]]:
        cfg = self.store.cfg.get(node_id)
        if cfg is None:
            raise ActionError(404, "NODE_NOT_FOUND", f"no node {node_id}")
        offered = [m for m in self.modules.values() if m.platform and m.platform == cfg.platform]
        if not offered:
            raise ActionError(409, code, f"no loaded module drives platform {cfg.platform!r}")
        return cfg, offered

    def _check_drives(self, cfg: Node, module: Module) -> None:
        if not (cfg.parent_id == self.self_id or (not cfg.parent_id and self.full_state)):
            raise ActionError(
                409, "NOT_PARENT", f"node {cfg.id} is driven by its parent {cfg.parent_id}, not by us"
            )
        if self._started.get(module.si) != "running":
            raise ActionError(503, "MODULE_NOT_RUNNING", f"module {module.si} is not running")

    def cfg_nodes(self) -> list[Node]:
        return list(self.store.cfg.values())

    def dsc_node(self, node_id: str) -> Node | None:
        return self.store.dsc.get(node_id)

    # -- freeze / thaw ------------------------------------------------------------------------------
    def freeze(self) -> None:
        self.frozen = True

    def thaw(self) -> None:
        self.frozen = False
        for ap in self.paths.values():
            ap.cancel()
        self.paths.clear()
        for node_id in list(self.store.cfg):
            self.recompute(node_id)

    # -- events ------------------------------------------------------------------------------------
    def _on_change(self, event: Event) -> None:
        node_id, _, path = event.url.partition(":")
        kind = event.data.kind
        if kind is ChangeKind.DELETE:
            self._drop(node_id)
            return
        if kind is ChangeKind.UPDATE:
            self._forget(node_id, path)
        if self.frozen:
            return
        if kind is ChangeKind.CREATE or kind is ChangeKind.CFG_UPDATE:
            self.recompute(node_id)
        elif kind is ChangeKind.UPDATE:
            self._discovered(node_id, path, event.data.value)

    def _forget(self, node_id: str, path: str) -> None:
        dsc = self.store.dsc.get(node_id)
        if dsc is None:
            return
        if path == "/RunState" and dsc.run_state is not RunState.SYNC and node_id != self.self_id:
            # Without its agent in SYNC nothing is known about the services running on the node.
            for sid in sorted(dsc.services):
                self.store.set_value(node_id, f"/Services/{sid}/State", ServiceState.UNKNOWN, dsc=True)
        if path not in self.graph.index:
            return
        for url in self.graph.forgotten(dsc):
            self.store.set_value(node_id, url, self.graph.zero[self.graph.index[url]], dsc=True)

    def _drop(self, node_id: str) -> None:
        self._stuck.pop(node_id, None)
        ap = self.paths.pop(node_id, None)
        if ap is not None:
            ap.cancel()
        retry = self._retries.pop(node_id, None)
        if retry is not None and retry.active():
            retry.cancel()

    def _discovered(self, node_id: str, path: str, value: Any) -> None:
        if path not in self.graph.index:
            return
        ap = self.paths.get(node_id)
        if ap is not None and not ap.complete:
            step = ap.step.mutation
            want = step.mutates.get(path)
            if want is not None and value == want[1]:
                ap.seen.add(path)
                if ap.seen >= step.mutates.keys():
                    self._advance(node_id, ap)
                return
        self.recompute(node_id)

    def _advance(self, node_id: str, ap: ActivePath) -> None:
        ap.cancel()
        ap.cur += 1
        ap.seen = set()
        ap.fired = False
        if ap.cur >= len(ap.chain):
            ap.cur = len(ap.chain) - 1
            ap.complete = True
            self.recompute(node_id)
            return
        self._start_step(node_id, ap)

    # -- path computation -----------------------------------------------------------------------
    def drives(self, cfg: Node) -> bool:
        """Whether a step of *cfg*'s path can be ours to perform. A node below one of our children
        is driven by that child (a sub-master): we see its Dsc arrive by sync and keep no path for
        it (:meth:`path_json` works its path out when asked)."""
        return (
            self._any_node
            or cfg.parent_id == self.self_id
            or cfg.id == self.self_id
            or (not cfg.parent_id and self.full_state)
        )

    def _plan(self, cfg: Node, dsc: Node) -> list[Edge] | None:
        """The cheapest chain from *dsc* to *cfg* (``[]`` if there, ``None`` if unreachable)."""
        g = self.graph
        return g.path(g.state_of(dsc), g.target_of(cfg), g.fixed_of(cfg))

    def recompute(self, node_id: str) -> None:
        cfg = self.store.cfg.get(node_id)
        dsc = self.store.dsc.get(node_id)
        if cfg is None or dsc is None or self.frozen:
            return
        if not self.drives(cfg):
            if node_id in self.paths:
                self._drop(node_id)
            return
        g = self.graph
        chain = self._plan(cfg, dsc)
        old = self.paths.get(node_id)
        if not chain:
            stuck = (g.state_of(dsc), g.target_of(cfg)) if chain is None else None
            if stuck is not None and self._stuck.get(node_id) != stuck:
                log.info(
                    "node {node}: no path to its configured state (you can't get there from here)",
                    node=node_id,
                )
            if stuck is None:
                self._stuck.pop(node_id, None)
            else:
                self._stuck[node_id] = stuck
            if old is not None and not old.complete:
                old.cancel()
                old.complete = True
            return
        if old is not None and not old.complete and old.fired and old.step.mutation is chain[0].mutation:
            old.chain[old.cur :] = chain  # the step in flight is still the first: do not re-fire it
            return
        if old is not None:
            old.cancel()
        ap = ActivePath(list(chain))
        self.paths[node_id] = ap
        self._start_step(node_id, ap)

    def _in_context(self, m: Mutation, cfg: Node) -> bool:
        if m.context is Context.ALL:
            return True
        if m.context is Context.SELF:
            return cfg.id == self.self_id
        return cfg.parent_id == self.self_id or (
            not cfg.parent_id and self.full_state and cfg.id != self.self_id
        )

    def _start_step(self, node_id: str, ap: ActivePath) -> None:
        m = ap.step.mutation
        cfg = self.store.cfg[node_id]
        if not self._in_context(m, cfg):
            ap.fired = True  # awaited: another kraken performs it, the result arrives by sync
            return
        module = self.modules.get(m.si)
        if module is None:
            ap.fired = True  # a pseudo-module (the sync engine) performs it by itself
            self._arm(node_id, ap, m)
            return
        state = self._started.get(m.si)
        if state != "running":
            self._parked.setdefault(m.si, set()).add(node_id)
            if state is None:
                self.start_module(m.si)
            return
        ap.fired = True
        self.mutations_fired += 1
        self.bus.emit_one(
            Event(EventType.STATE_MUTATION, f"{node_id}:", MutationData(MutationKind.MUTATE, m.si, m.id))
        )
        self._arm(node_id, ap, m)
        try:
            module.mutate(m, cfg, self.store.dsc[node_id])
        except Exception as e:
            log.failure("module {si} raised performing {mut} on {node}", si=m.si, mut=m.id, node=node_id)
            self.fail(m.si, node_id, m.id, f"module raised {e!r}")

    def _arm(self, node_id: str, ap: ActivePath, m: Mutation) -> None:
        if m.timeout > 0:
            ap.timer = self.deadlines.call_later(m.timeout, self._timeout, node_id, ap)

    def _timeout(self, node_id: str, ap: ActivePath) -> None:
        if self.paths.get(node_id) is not ap or ap.complete:
            return
        ap.cancel()
        m = ap.step.mutation
        self.mutation_failures += 1
        if m.fail_to is None:
            log.warn("{mut} timed out on {node}; no fail-to declared", mut=m.name, node=node_id)
            ap.complete = True
            self._schedule_retry(node_id)
            return
        url, value = m.fail_to
        for i in range(ap.cur - 1, -1, -1):
            before = ap.chain[i].mutation.mutates.get(url)
            if before is not None and before[0] == value:
                log.info("{mut} timed out on {node}: devolving to step {i}", mut=m.name, node=node_id, i=i)
                ap.cur, ap.seen, ap.fired = i, set(), False
                self._start_step(node_id, ap)
                return
        log.warn(
            "{mut} failed on {node}: declaring {url} = {value}",
            mut=m.name,
            node=node_id,
            url=url,
            value=model.printable(value),
        )
        ap.complete = True
        self.bus.emit_one(
            Event(EventType.STATE_MUTATION, f"{node_id}:", MutationData(MutationKind.INTERRUPT, m.si, m.id))
        )
        module = self.modules.get(m.si)
        if module is not None:
            try:
                module.interrupt(node_id)
            except Exception:
                log.failure("module {si} raised on interrupt", si=m.si)
        self.bus.emit_one(
            Event(EventType.DISCOVERY, f"{node_id}:{url}", DiscoveryData(m.si, model.printable(value)))
        )
        changed = node_id in self.store.dsc and self.store.set_value(node_id, url, value, dsc=True)
        if not changed:
            self._schedule_retry(node_id)

    def _schedule_retry(self, node_id: str) -> None:
        old = self._retries.get(node_id)
        if old is not None and old.active():
            return
        self._retries[node_id] = self.clock.callLater(self.retry_delay, self._retry, node_id)

    def _retry(self, node_id: str) -> None:
        self._retries.pop(node_id, None)
        ap = self.paths.get(node_id)
        if ap is not None and not ap.complete:
            return
        self.paths.pop(node_id, None)
        self.recompute(node_id)

    # -- module services ---------------------------------------------------------------------------
    def start_module(self, si: str) -> None:
        """Start *si*'s service (auto-start when a step needs it); parked nodes resume once it runs."""
        module = self.modules[si]
        self._started[si] = "starting"
        self._record_service(si, ServiceState.INIT)
        d = maybeDeferred(module.start, self)
        d.addCallbacks(lambda _: self._module_up(si), lambda f: self._module_failed(si, f))

    def _module_up(self, si: str) -> None:
        self._started[si] = "running"
        log.info("module {si} running", si=si)
        self._record_service(si, ServiceState.RUN)
        for node_id in sorted(self._parked.pop(si, set())):
            ap = self.paths.get(node_id)
            if ap is not None and not ap.complete and not ap.fired and ap.step.mutation.si == si:
                self._start_step(node_id, ap)

    def _module_failed(self, si: str, failure: Failure) -> None:
        self._started[si] = "failed"
        self._record_service(si, ServiceState.ERROR)
        log.error("module {si} failed to start: {why}", si=si, why=failure.getErrorMessage())
        for node_id in sorted(self._parked.pop(si, set())):
            ap = self.paths.get(node_id)
            if ap is not None and not ap.complete:
                self._timeout(node_id, ap)

    def _record_service(self, si: str, state: ServiceState) -> None:
        if self.self_id in self.store.dsc:
            self.store.set_value(self.self_id, f"/Services/{si}/State", state, dsc=True)

    def stop_modules(self) -> None:
        for si, module in self.modules.items():
            if self._started.get(si) == "running":
                try:
                    module.stop()
                except Exception:
                    log.failure("module {si} raised on stop", si=si)
        self._started.clear()
        for ap in self.paths.values():
            ap.cancel()
        self.deadlines.cancel_all()
        for call in self._retries.values():
            if call.active():
                call.cancel()
        self._retries.clear()

    # -- queries ------------------------------------------------------------------------------------
    def path_json(self, node_id: str) -> dict[str, Any] | None:
        ap = self.paths.get(node_id)
        if ap is not None:
            return ap.to_json()
        cfg, dsc = self.store.cfg.get(node_id), self.store.dsc.get(node_id)
        if cfg is None or dsc is None or self.drives(cfg):
            return None
        chain = self._plan(cfg, dsc)  # a node a sub-master drives: from what we last heard of it
        return ActivePath(list(chain), complete=not chain).to_json() if chain is not None else None

    def active_paths(self) -> int:
        return sum(1 for ap in self.paths.values() if not ap.complete)

    def converged(self, node_id: str) -> bool:
        cfg, dsc = self.store.cfg[node_id], self.store.dsc[node_id]
        return self.graph.satisfies(self.graph.state_of(dsc), self.graph.target_of(cfg))
