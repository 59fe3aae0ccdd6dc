"""One pipeline server's registries, store and API, its config section, and its boot at start."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from kraken.core.config import ConfigError, ConfigPath, setting
from kraken.core.sqlitedb import open_durable
from kraken.pipeline.answers import MAX_JSON_DEPTH, MAX_RESPONSE_BYTES
from kraken.pipeline.api import Api
from kraken.pipeline.clients.base import ClientContext
from kraken.pipeline.clients.outbound import OutboundPolicy, parse_rule
from kraken.pipeline.deadletters import DeadLetters
from kraken.pipeline.expr.functions import MAX_NESTING, MAX_VALUE_BYTES, set_value_limits
from kraken.pipeline.journal import Journal, Writer
from kraken.pipeline.pipelines import Defined, PipelineRegistry, Version
from kraken.pipeline.replays import Replays
from kraken.pipeline.routes import Routes
from kraken.pipeline.secretrefs import SecretPolicy
from kraken.pipeline.services import Service as PipelineService
from kraken.pipeline.services import ServiceRegistry
from kraken.pipeline.store import Store, read_history, read_project, write_version
from kraken.pipeline.triggers.definitions import TriggerDef
from kraken.pipeline.triggers.pubsub import Connector
from kraken.pipeline.triggers.registry import TriggerRegistry
from kraken.pubsub.client import connect_client

log = Logger(namespace="kraken.pipeline.tap")


DEFAULT_DB = "run/pipeline/pipeline.sqlite3"


@dataclass(frozen=True, kw_only=True)
class PipelineSection:
    database: ConfigPath | None = setting(
        None, f"SQLite file keeping definitions across restarts (null: {DEFAULT_DB} under the cwd)"
    )
    persist: bool = setting(True, "keep definitions in the database; false keeps them in memory only")
    project_dir: ConfigPath | None = setting(
        None, "folder with services/*.json, pipelines/*.json, routes.json"
    )
    project_history: bool = setting(
        False, "also keep every pipeline version in project_dir/history/pipelines/<Name>/vN.json"
    )
    default_timeout: float = setting(20.0, "seconds an event may take before its error event", minimum=0.001)
    http_timeout: float = setting(30.0, "default timeout of HTTP service calls, seconds", minimum=0.001)
    allow_lambda_code: bool = setting(False, "allow Python source in lambda start configs (remote code!)")
    lambda_modules: list[str] = setting([], "Python module prefixes lambda services may name")
    cli_commands: list[str] = setting([], "programs the CLI client may run")
    api_token: str | None = setting(None, "when set, API requests need 'Authorization: Bearer <token>'")
    max_value_bytes: int = setting(
        MAX_VALUE_BYTES, "characters a value may expand to (expressions, mappings, events)", minimum=1024
    )
    max_value_nesting: int = setting(MAX_NESTING, "levels a value may nest", minimum=2)
    max_response_bytes: int = setting(
        MAX_RESPONSE_BYTES, "bytes one JSON answer (or stream line) may take", minimum=1024
    )
    max_json_depth: int = setting(MAX_JSON_DEPTH, "levels a request body may nest", minimum=2)
    outbound_allow: list[str] = setting(
        [], "destinations HTTP services may call: URL prefixes, host:port, networks (empty: none)"
    )
    secret_env: list[str] = setting(
        [], "environment variables ${env:NAME} may read in client start options (fnmatch patterns)"
    )
    journal_retention: float = setting(
        86400.0, "seconds a durable pipeline's finished events stay queryable (and deduplicated)", minimum=1.0
    )
    pubsub_server: str | None = setting(
        None, "host:port of the kraken-pubsub that pubsub triggers subscribe to and publish_to publishes to"
    )
    pubsub_tls: bool = setting(
        True, "connect to pubsub_server over mutual TLS (our tls section; it must present role pubsub)"
    )
    journal_commit_ms: float = setting(
        2.0, "milliseconds a durable journal commit gathers events for (one fsync each)", minimum=0.0
    )
    dead_letter_limit: int = setting(100_000, "dead letters kept at most (more are refused)", minimum=1)
    secret_files: list[str] = setting(
        [], "folders whose files ${file:/path} may read in client start options"
    )

    def __post_init__(self) -> None:
        if self.pubsub_server is not None:
            host, _, port = self.pubsub_server.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"pipeline.pubsub_server: {self.pubsub_server!r} is not host:port")
        for entry in self.outbound_allow:
            try:
                parse_rule(entry)
            except ValueError as e:
                raise ConfigError(f"pipeline.outbound_allow: {e}") from None


class PipelineBoot(Service):
    """Restores stored definitions, then applies the project folder, once the reactor runs."""

    def __init__(self, app: PipelineApp, reactor: IReactorCore) -> None:
        self.app = app
        self.reactor = reactor

    def startService(self) -> None:
        super().startService()
        if self.app.journal_pool is not None:
            self.app.journal_pool.start()
        self.reactor.callWhenRunning(self.app.boot)

    def stopService(self) -> Any:
        super().stopService()
        self.app.triggers.stop_all()
        if self.app.journal_pool is not None:
            self.app.journal_pool.stop()  # the commit under way ends first
        if self.app.journal.writer is not None:
            self.app.journal.writer[0].close()
        if self.app.store is not None:
            self.app.store.close()


class PipelineApp:
    """The registries, the store and the API of one server."""

    def __init__(
        self, cfg: PipelineSection, clock: IReactorTime, tls: Any = None, metrics: Any = None
    ) -> None:
        self.clock = clock
        self.cfg = cfg
        self.store = Store(cfg.database or DEFAULT_DB, metrics) if cfg.persist else None
        set_value_limits(cfg.max_value_bytes, cfg.max_value_nesting)
        ctx = ClientContext(
            clock,
            tls,
            cfg.allow_lambda_code,
            list(cfg.lambda_modules),
            list(cfg.cli_commands),
            cfg.http_timeout,
            outbound=OutboundPolicy(cfg.outbound_allow),
            secret_policy=SecretPolicy(tuple(cfg.secret_env), tuple(cfg.secret_files)),
        )
        self.services = ServiceRegistry(ctx, self._service_changed)
        db = self.store.db if self.store is not None else sqlite3.connect(":memory:", isolation_level=None)
        self.journal_pool: ThreadPool | None = None
        writer: Writer | None = None
        if self.store is not None:  # commits in a thread of their own: the fsync does not hold the reactor
            pool = self.journal_pool = ThreadPool(1, 1, "kraken-pipeline-journal")
            reactor: Any = clock
            writer = (
                open_durable(cfg.database or DEFAULT_DB, isolation_level=None, check_same_thread=False),
                lambda f, *args: deferToThreadPool(reactor, pool, f, *args),
            )
        self.journal = Journal(db, clock, cfg.journal_retention, cfg.journal_commit_ms / 1000.0, writer)
        self.dead_letters = DeadLetters(db, cfg.dead_letter_limit, cfg.max_response_bytes, ctx.refusals)
        self.pipelines = PipelineRegistry(
            self.services, clock, cfg.default_timeout, self._pipeline_changed, self.dead_letters.add,
            self._version_defined, self.journal,
        )
        self.routes = Routes(self.pipelines, self._routes_changed)
        self.triggers = TriggerRegistry(
            self.pipelines, self.routes, clock, ctx.secret_policy, self._pubsub_connector(tls),
            self._trigger_changed, self._checkpoint, self._save_checkpoint,
        )
        self.api = Api(
            self.services,
            self.pipelines,
            self.routes,
            metrics,
            cfg.api_token,
            cfg.max_response_bytes,
            cfg.max_json_depth,
            ctx.refusals,
            Replays(self.pipelines, self.dead_letters),
            self.journal,
            self.triggers,
        )

    def _service_changed(self, key: str, svc: PipelineService | None) -> None:
        if self.store is None:
            return
        if svc is None:
            self.store.delete("service", key)
        else:
            self.store.put("service", key, svc.name, svc.definition, svc.client is not None, None)

    def _pipeline_changed(self, key: str, found: Defined | None) -> None:
        if self.store is None:
            return
        if found is None:
            self.store.delete("pipeline", key)
        else:
            options = {
                **(found.options or {}),
                "plugged": found.plugged,
                "version": found.version,
                "previous": found.previous,
                "beside": sorted(found.beside),
            }
            self.store.put("pipeline", key, found.name, found.definition, found.runtime is not None, options)

    def _version_defined(self, key: str, name: str, number: int, version: Version) -> None:
        if self.store is not None:
            self.store.put_version(key, name, number, version.definition, version.at)
        if self.cfg.project_dir and self.cfg.project_history:
            try:
                write_version(self.cfg.project_dir, key, number, version.definition)
            except OSError as e:
                log.error("version {n} of pipeline {name} not written to the project folder: {e}",
                          n=number, name=name, e=e)

    def _pubsub_connector(self, tls: Any) -> Connector | None:
        if self.cfg.pubsub_server is None:
            return None
        host, _, port = self.cfg.pubsub_server.rpartition(":")
        settings = tls if self.cfg.pubsub_tls else None
        if self.cfg.pubsub_tls and tls is None:
            raise ConfigError("pipeline.pubsub_tls needs the server's tls section (cert, key, ca)")
        return lambda: connect_client(self.clock, host.strip("[]"), int(port), settings)

    def _trigger_changed(self, key: str, trig: TriggerDef | None) -> None:
        if self.store is None:
            return
        if trig is None:
            self.store.delete("trigger", key)
        else:
            self.store.put("trigger", key, trig.name, trig.definition, True, None)

    def _checkpoint(self, key: str) -> float | None:
        if self.store is None:
            return None
        for at, _, _ in self.store.load("trigger_checkpoint", key):
            return float(at)
        return None

    def _save_checkpoint(self, key: str, at: float) -> None:
        if self.store is not None:
            self.store.put("trigger_checkpoint", key, key, at, False, None)

    def _routes_changed(self, table: dict[str, str] | None) -> None:
        if self.store is not None:
            self.store.put("routes", "table", "routes", table, False, None)

    @defer.inlineCallbacks
    def boot(self) -> Any:
        """Stored state first, then the project folder; failures are logged, not fatal."""
        if self.cfg.project_dir:
            try:
                for key, number, definition in read_history(self.cfg.project_dir):
                    self.pipelines.history.setdefault(key, {}).setdefault(
                        number, Version(definition, self.clock.seconds())
                    )
            except (OSError, ValueError) as e:
                log.error("project folder history unreadable: {e}", e=e)
        if self.store is not None:
            for key, _, number, definition, at in self.store.versions():
                self.pipelines.history.setdefault(key, {})[number] = Version(definition, at)
            for definition, started, _ in list(self.store.load("service")):
                yield self._apply_service(definition, started, "database")
            for definition, started, options in list(self.store.load("pipeline")):
                yield self._apply_pipeline(definition, started, options, "database")
            for table, _, _ in list(self.store.load("routes")):
                self.routes.table = table
            for definition, _, _ in list(self.store.load("trigger")):
                try:
                    self.triggers.define(definition)
                except Exception as e:
                    log.error("database: trigger {name} not restored: {e}", name=definition.get("name"), e=e)
        if self.cfg.project_dir:
            try:
                services, pipelines, routes = read_project(self.cfg.project_dir)
            except (OSError, ValueError) as e:
                log.error("project folder {dir} unreadable: {e}", dir=self.cfg.project_dir, e=e)
                return
            for definition in services:
                yield self._apply_service(definition, True, "project folder")
            for definition in pipelines:
                yield self._apply_pipeline(definition, True, {}, "project folder")
            if routes is not None:
                try:
                    self.routes.define(routes)
                except Exception as e:
                    log.error("project routes.json rejected: {e}", e=e)

    @defer.inlineCallbacks
    def _apply_service(self, definition: Any, start: bool, origin: str) -> Any:
        name = definition.get("name") if isinstance(definition, dict) else None
        try:
            if isinstance(name, str) and self.services.status(name) == ":ready":
                yield self.services.stop(name)
            defined = yield self.services.define(definition)
            if start:
                yield self.services.start(defined)
        except Exception as e:
            log.error("{origin}: service {name} not restored: {e}", origin=origin, name=name, e=e)

    @defer.inlineCallbacks
    def _apply_pipeline(self, definition: Any, start: bool, options: dict[str, Any], origin: str) -> Any:
        name = definition.get("name") if isinstance(definition, dict) else None
        try:
            if isinstance(name, str) and self.pipelines.status(name) == ":ready":
                yield self.pipelines.stop(name)
            version = options.get("version")
            defined = yield self.pipelines.define(
                definition, options.get("plugged"), version if isinstance(version, int) else None
            )
            found = self.pipelines.get(defined)
            if isinstance(options.get("previous"), int):
                found.previous = options["previous"]
            sync, telemetry = bool(options.get("sync")), bool(options.get("telemetry"))
            if start:
                yield self.pipelines.start(defined, sync, telemetry)
            for number in options.get("beside") or []:
                yield self.pipelines.start_version(defined, number, sync, telemetry)
        except Exception as e:
            log.error("{origin}: pipeline {name} not restored: {e}", origin=origin, name=name, e=e)
