"""``twistd -n kraken-state``: the cluster state engine (REST, websocket, parent/child sync)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kraken.core.config import ConfigPath, KrakenOptions, ServerConfig, listen_setting, section, setting
from kraken.core.http import make_site
from kraken.core.reactor import IServerReactor
from kraken.core.service import KrakenService
from kraken.core.sqlitedb import DamagedDatabase
from kraken.core.tls import TLSConfigError
from kraken.state.api import StateAPI
from kraken.state.console import ConsoleLimits, ConsoleManager
from kraken.state.discovery import Discovery, RangeError
from kraken.state.model import DEFAULT_ID, ModelError
from kraken.state.modules.loader import ModuleLoadError, load_modules
from kraken.state.modules.redfish import INVENTORY
from kraken.state.own_services import OwnServices
from kraken.state.service import StateError, StateService
from kraken.state.sync import SyncClientService, SyncServerFactory, parse_parent
from kraken.state.websocket import EventSocketFactory

LOOPBACK = "interface=127.0.0.1"
DEFAULT_DB = "kraken-state.sqlite"


@dataclass(frozen=True, kw_only=True)
class ConsoleSection:
    per_node: int = setting(1, "console sessions one node may have; one more is refused", minimum=1)
    sessions: int = setting(16, "console sessions this server holds at most", minimum=0)
    idle: float = setting(900.0, "seconds without a byte either way before a console closes", minimum=0.01)
    connect: float = setting(30.0, "seconds the BMC has to open the console", minimum=0.01)
    output_buffer: int = setting(
        256 * 1024, "console output bytes held for a slow client; beyond, the oldest are dropped", minimum=1
    )
    input_buffer: int = setting(
        64 * 1024, "typed bytes waiting for the BMC; beyond, the session closes", minimum=1
    )


@dataclass(frozen=True, kw_only=True)
class StateSection:
    id: str = setting(DEFAULT_ID, "this kraken's node id (a UUID)")
    db: ConfigPath | None = setting(
        None, "SQLite file keeping Cfg across restarts (null: kraken-state.sqlite in cwd)"
    )
    persist: bool = setting(True, "keep Cfg in the db file; false keeps it in memory only")
    state_file: ConfigPath | None = setting(None, 'initial Cfg as {"nodes": [...]}; adds nodes the db lacks')
    parent: str | None = setting(None, "HOST:PORT of the parent kraken; makes this kraken a child")
    fallback_parents: list[str] = setting(
        [], "HOST:PORT of krakens a child phones home to, in turn, when its parent is lost"
    )
    submaster: bool = setting(
        False, "a child that is also a parent: listens on sync_listen, Cfg down and Dsc up for nodes below it"
    )
    freeze: bool = setting(False, "start with the mutation engine frozen")
    ws_listen: list[str] = setting([f"tls:tcp:3142:{LOOPBACK}"], "endpoints of the event websocket")
    sync_listen: list[str] = setting(
        [f"tls:tcp:31415:{LOOPBACK}:backlog=1024"], "endpoints where children phone home"
    )
    api_roles: list[str] = setting(["client", "state"], "certificate roles admitted to REST and websocket")
    hello: float = setting(10.0, "seconds between sync messages to each neighbour", minimum=0.01)
    dead: float = setting(40.0, "seconds without a message before a neighbour is dead", minimum=0.05)
    retry_delay: float = setting(10.0, "seconds before retrying a node whose mutation failed", minimum=0)
    sse_timeout: float = setting(90.0, "seconds a booted child has to phone home", minimum=0)
    modules: list[str] = setting(
        ["sim", "ipmi", "redfish", "freebusy"], "state modules: built-in, entry point or pkg:Class"
    )
    module_config: dict[str, Any] = setting({}, "per-module settings keyed by module name")
    discovery: dict[str, Any] = setting(
        {}, "BMC ranges to scan: redfish: [http://HOSTS:PORTS], ipmi: [HOSTS:PORTS], user, password..."
    )
    console: ConsoleSection = section(ConsoleSection)


@dataclass(frozen=True, kw_only=True)
class StateConfig(ServerConfig):
    listen: list[str] = listen_setting([f"tls:tcp:3141:{LOOPBACK}"])
    state: StateSection = section(StateSection)


class Options(KrakenOptions[StateConfig]):
    tapname = "kraken-state"

    def postOptions(self) -> None:
        if self.opts.get("parent"):
            self.overrides.append(("state.parent", self.opts["parent"]))
        if self.opts.get("state"):
            self.overrides.append(("state.state_file", self.opts["state"]))
        if self.opts.get("freeze"):
            self.overrides.append(("state.freeze", "true"))
        super().postOptions()


# Extra twistd flags beside the schema's: the original's -parent, -state and -freeze.
Options.optParameters = [
    *Options.optParameters,
    ["parent", None, None, "HOST:PORT of the parent kraken (same as --state-parent)"],
    ["state", None, None, "initial state file (same as --state-state-file)"],
]
Options.optFlags = [["freeze", None, "start frozen (same as --state-freeze true)"]]


def makeService(options: Options, reactor: IServerReactor | None = None) -> KrakenService:
    config = options.config
    st = config.state
    try:
        svc = KrakenService("state", config, reactor)
    except TLSConfigError as e:
        raise SystemExit(f"kraken-state: {e}") from None
    try:
        modules = load_modules(list(st.modules), st.module_config)
        parent = parse_parent(st.parent) if st.parent else None
        fallbacks = [parse_parent(p) for p in st.fallback_parents]
        if fallbacks and parent is None:
            raise ValueError("fallback_parents needs a parent")
        metrics = {
            "corrupt_entries": svc.metrics.counter(
                "corrupt_entries", "unreadable entries found on disk, by store", ["store"]
            ),
        }
        state = StateService(
            modules,
            svc.reactor,
            self_id=st.id,
            db=(st.db or DEFAULT_DB) if st.persist else None,
            state_file=st.state_file,
            full_state=parent is None,
            freeze=st.freeze,
            retry_delay=st.retry_delay,
            sse_timeout=st.sse_timeout,
            metrics=metrics,
        )
    except (ModuleLoadError, StateError, ModelError, ValueError, DamagedDatabase) as e:
        raise SystemExit(f"kraken-state: {e}") from None
    state.setServiceParent(svc)
    try:
        _listen(svc, state, config, parent, fallbacks)
    except TLSConfigError as e:
        raise SystemExit(f"kraken-state: {e}") from None
    return svc


def _listen(
    svc: KrakenService,
    state: StateService,
    config: StateConfig,
    parent: tuple[str, int] | None,
    fallbacks: list[tuple[str, int]],
) -> None:
    st = config.state
    engine = state.engine
    counted = svc.metrics.counted
    counted("mutations", "mutations the engine asked a module to perform", lambda: engine.mutations_fired)
    counted("discoveries", "discoveries accepted", lambda: engine.discoveries_accepted)
    counted("mutation_failures", "mutations that timed out or failed", lambda: engine.mutation_failures)
    svc.metrics.gauge("nodes", "nodes in the Cfg store").set_function(lambda: len(state.store.cfg))
    svc.metrics.gauge("active_paths", "nodes with a mutation path in progress").set_function(
        state.engine.active_paths
    )
    svc.metrics.gauge("frozen", "1 while the mutation engine is frozen").set_function(
        lambda: int(state.engine.frozen)
    )
    serves_children = parent is None or st.submaster
    sync_server = (
        SyncServerFactory(state, svc.reactor, hello=st.hello, dead=st.dead) if serves_children else None
    )
    discovery = None
    if st.discovery:
        try:
            discovery = Discovery(
                state.store, svc.reactor, dict(st.discovery),
                lambda node_id, inventory: state.engine.report("redfish", node_id, INVENTORY.url, inventory),
            )
        except RangeError as e:
            raise SystemExit(f"kraken-state: {e}") from None
        discovery.setServiceParent(svc)
    c = st.console
    consoles = ConsoleManager(
        state.engine.console,
        svc.reactor,
        ConsoleLimits(c.per_node, c.sessions, c.idle, c.connect, c.output_buffer, c.input_buffer),
    )
    consoles.setServiceParent(svc)
    svc.metrics.gauge("console_sessions", "open serial console sessions").set_function(consoles.count)
    api = StateAPI(
        state.store, state.engine, lambda: svc.ports.get("ws"), state.durable, state.groups, sync_server,
        discovery, consoles,
    )
    site = make_site(
        api.router(), svc.metrics, health_checks={"engine": lambda: bool(state.running)}, http=config.http,
        reactor=svc.reactor,
    )
    roles = list(st.api_roles)
    svc.listen_all("http", config.listen, site, allowed_roles=roles)
    svc.listen_all("ws", st.ws_listen, EventSocketFactory(state.bus, consoles), allowed_roles=roles)
    OwnServices(state, ["restapi", "websocket"] + (["sse"] if sync_server else [])).setServiceParent(svc)
    if sync_server is not None:
        svc.listen_all("sync", st.sync_listen, sync_server, ["state"])
    if parent is not None:
        if svc.tls is None:
            raise SystemExit("kraken-state: a child needs the tls section to phone home to its parent")
        client = SyncClientService(
            state, svc.reactor, parent[0], parent[1], svc.tls,
            hello=st.hello, dead=st.dead, fallbacks=fallbacks,
        )
        client.setServiceParent(svc)
