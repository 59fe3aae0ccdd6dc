"""Defined pipelines by canonical name, their lifecycle, and the started runtimes.

| op     | undefined   | not_ready            | ready                  |
| define | → not_ready | replace → not_ready  | ``:already_started``   |
| start  | ``:undefined`` | → ready           | ``:already_started``   |
| stop   | ``:undefined`` | ``:not_ready``    | → not_ready            |
| delete | ``:undefined`` | → undefined       | stop → undefined       |
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from kraken.pipeline.engine.compiler import Compiled, compile_pipeline
from kraken.pipeline.engine.runtime import Outlets, Pipeline
from kraken.pipeline.journal import Journal
from kraken.pipeline.lifecycle import ALREADY_STARTED, NOT_READY, READY, UNDEFINED, ApiError, KeyedLock
from kraken.pipeline.names import modulize, pipeline_module
from kraken.pipeline.services import ServiceRegistry

log = Logger(namespace="kraken.pipeline.pipelines")


@dataclass
class Defined:
    """A defined pipeline: its live version (``definition``, ``compiled``, ``runtime``: what
    calls, casts, streams and routes reach) and other versions started beside it."""

    name: str
    key: str
    definition: dict[str, Any]
    compiled: Compiled
    runtime: Pipeline | None = None
    options: dict[str, Any] | None = None
    plugged: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = 0
    previous: int | None = None  # the version live before the last switch (for rollback)
    beside: dict[int, Pipeline] = field(default_factory=dict)


@dataclass
class Version:
    definition: dict[str, Any]
    at: float


class PipelineRegistry:
    def __init__(
        self,
        services: ServiceRegistry,
        clock: IReactorTime,
        default_timeout: float = 20.0,
        on_change: Callable[[str, Defined | None], None] | None = None,
        dead_letter: Callable[[dict[str, Any]], Any] | None = None,
        on_version: Callable[[str, str, int, Version], None] | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.journal = journal
        # every version ever defined, by pipeline key (kept when a pipeline is deleted)
        self.history: dict[str, dict[int, Version]] = {}
        self.on_version = on_version or (lambda key, name, number, version: None)
        self.outlets = Outlets(self._running, dead_letter or (lambda entry: None))
        self.services = services
        self.clock = clock
        self.default_timeout = default_timeout
        self.defined: dict[str, Defined] = {}
        self.locks = KeyedLock()
        self.on_change = on_change or (lambda key, p: None)
        self.order = 0

    def _lookup(self, name: str) -> dict[str, Any] | None:
        found = self.defined.get(modulize(name))
        return found.definition if found is not None else None

    def get(self, name: str) -> Defined:
        found = self.defined.get(modulize(name))
        if found is None:
            raise ApiError(UNDEFINED)
        return found

    def runtime(self, name: str) -> Pipeline:
        found = self.get(name)
        if found.runtime is None:
            raise ApiError(NOT_READY)
        return found.runtime

    def _running(self, name: str) -> Pipeline | None:
        found = self.defined.get(modulize(name))
        return found.runtime if found is not None else None

    def status(self, name: str) -> str:
        found = self.defined.get(modulize(name))
        if found is None:
            return UNDEFINED
        return READY if found.runtime is not None else NOT_READY

    def names(self) -> list[str]:
        return sorted(p.name for p in self.defined.values())

    def define(
        self, definition: Any, plugged: dict[str, dict[str, Any]] | None = None, version: int | None = None
    ) -> defer.Deferred[str]:
        """Define (a new version unless it equals the latest); *plugged* and *version* restore
        a stored pipeline as it was."""
        plugged = copy.deepcopy(plugged) if plugged else {}
        name, compiled = compile_pipeline(definition, self._snapshot_lookup(plugged))
        found = Defined(name, modulize(name), copy.deepcopy(definition), compiled, plugged=plugged)
        return self.locks.run(found.key, self._define, found, version)

    def record(self, key: str, name: str, definition: dict[str, Any], version: int | None = None,
               at: float | None = None) -> int:
        """Keep *definition* in the history: its version number (a new one unless it equals
        the latest, or *version* when restoring)."""
        versions = self.history.setdefault(key, {})
        if version is None:
            latest = max(versions, default=0)
            if latest and versions[latest].definition == definition:
                return latest
            version = latest + 1
        elif version in versions:
            return version
        entry = Version(copy.deepcopy(definition), self.clock.seconds() if at is None else at)
        versions[version] = entry
        self.on_version(key, name, version, entry)
        return version

    def _define(self, found: Defined, version: int | None = None) -> str:
        old = self.defined.get(found.key)
        if old is not None and old.runtime is not None:
            raise ApiError(ALREADY_STARTED)
        found.version = self.record(found.key, found.name, found.definition, version)
        if old is not None:
            found.beside, found.previous = old.beside, old.previous
        self.defined[found.key] = found
        self.on_change(found.key, found)
        log.info(
            "pipeline {name} defined ({n} components)", name=found.name, n=len(found.compiled.components)
        )
        return found.name

    def start(self, name: str, sync: bool = False, telemetry: bool = False) -> defer.Deferred[str]:
        return self.locks.run(modulize(name), self._start, name, sync, telemetry)

    def _start(self, name: str, sync: bool, telemetry: bool) -> str:
        found = self.get(name)
        if found.runtime is not None:
            raise ApiError(ALREADY_STARTED)
        # A fresh graph per start: counters, memos and queues start empty.
        _, compiled = compile_pipeline(found.definition, self._snapshot_lookup(found.plugged))
        found.runtime = self._running_version(found.name, compiled, sync, telemetry, found.version)
        found.options = {"sync": sync, "telemetry": telemetry}
        self.on_change(found.key, found)
        log.info("pipeline {name} started", name=found.name)
        return pipeline_module(found.name)

    def _running_version(
        self, name: str, compiled: Compiled, sync: bool, telemetry: bool, version: int
    ) -> Pipeline:
        """A started version; a durable one journals its events and runs again the ones a
        crash left unfinished."""
        rt = Pipeline(
            name, compiled, self.services, self.clock, self.default_timeout, sync, telemetry,
            outlets=self.outlets, version=version,
        )
        if compiled.durable and self.journal is not None:
            rt.journal = self.journal
            self.clock.callLater(0, self.journal.recover, rt)
        return rt

    def _snapshot_lookup(self, plugged: dict[str, dict[str, Any]]) -> Callable[[str], dict[str, Any] | None]:
        """Plugs are copied at define time: record what each plug target was then."""

        def lookup(name: str) -> dict[str, Any] | None:
            key = modulize(name)
            if key not in plugged:
                found = self._lookup(name)
                if found is None:
                    return None
                plugged[key] = copy.deepcopy(found)
            return plugged[key]

        return lookup

    def stop(self, name: str) -> defer.Deferred[str]:
        return self.locks.run(modulize(name), self._stop, name, False)

    def delete(self, name: str) -> defer.Deferred[str]:
        return self.locks.run(modulize(name), self._stop, name, True)

    def _stop(self, name: str, delete: bool) -> str:
        found = self.get(name)
        if found.runtime is None and not delete:
            raise ApiError(NOT_READY)
        if found.runtime is not None:
            found.runtime.stop()
            found.runtime = None
        for version in list(found.beside):
            found.beside.pop(version).stop()
        if delete:
            del self.defined[found.key]
            self.on_change(found.key, None)
        else:
            self.on_change(found.key, found)
        return "ok"

    # -- versions --------------------------------------------------------------------------------
    def versions(self, name: str) -> list[dict[str, Any]]:
        key = modulize(name)
        found = self.defined.get(key)
        versions = self.history.get(key)
        if not versions:
            raise ApiError(UNDEFINED)
        out = []
        for number, entry in sorted(versions.items()):
            live = found is not None and found.version == number
            started = found is not None and (
                (live and found.runtime is not None) or number in found.beside
            )
            out.append({"version": number, "live": live, "started": started, "defined_at": entry.at})
        return out

    def version_definition(self, name: str, version: int) -> dict[str, Any]:
        entry = self.history.get(modulize(name), {}).get(version)
        if entry is None:
            raise ApiError(":no_version", {"pipeline": name, "version": version})
        return entry.definition

    def version_runtime(self, name: str, version: int) -> Pipeline:
        found = self.get(name)
        if version == found.version and found.runtime is not None:
            return found.runtime
        rt = found.beside.get(version)
        if rt is None:
            self.version_definition(name, version)
            raise ApiError(NOT_READY, {"version": version})
        return rt

    def define_version(self, definition: Any) -> defer.Deferred[dict[str, Any]]:
        """A new version beside the live one (which keeps running); a first one is defined."""
        name, _ = compile_pipeline(definition, self._snapshot_lookup({}))
        key = modulize(name)

        def define() -> Any:
            if key not in self.defined:
                compiled = compile_pipeline(definition, self._lookup_now)[1]
                return self._define(Defined(name, key, copy.deepcopy(definition), compiled))
            return name

        def numbered(_: Any) -> dict[str, Any]:
            return {"ok": name, "version": self.record(key, name, copy.deepcopy(definition))}

        return self.locks.run(key, define).addCallback(numbered)

    def _lookup_now(self, name: str) -> dict[str, Any] | None:
        return self._snapshot_lookup({})(name)

    def start_version(self, name: str, version: int, sync: bool = False, telemetry: bool = False) -> Any:
        return self.locks.run(modulize(name), self._start_version, name, version, sync, telemetry)

    def _start_version(self, name: str, version: int, sync: bool, telemetry: bool) -> str:
        found = self.get(name)
        if version == found.version:
            return self._start(name, sync, telemetry)
        if version in found.beside:
            raise ApiError(ALREADY_STARTED, {"version": version})
        definition = self.version_definition(name, version)
        _, compiled = compile_pipeline(definition, self._lookup_now)
        found.beside[version] = self._running_version(found.name, compiled, sync, telemetry, version)
        self.on_change(found.key, found)
        log.info("pipeline {name} version {version} started beside the live one", name=found.name,
                 version=version)
        return pipeline_module(found.name)

    def stop_version(self, name: str, version: int) -> Any:
        return self.locks.run(modulize(name), self._stop_version, name, version)

    def _stop_version(self, name: str, version: int) -> str:
        found = self.get(name)
        if version == found.version:
            hint = "switch to another version first, or stop the pipeline"
            raise ApiError(":live_version", {"version": version, "hint": hint})
        rt = found.beside.pop(version, None)
        if rt is None:
            raise ApiError(NOT_READY, {"version": version})
        rt.stop()
        self.on_change(found.key, found)
        return "ok"

    def switch(self, name: str, version: int | None) -> Any:
        """Make *version* live (``None``: the previous one, a rollback) in one step: events
        already injected finish on the version they entered, every later one enters the new.
        A started pipeline starts the version first when it does not run beside yet."""
        return self.locks.run(modulize(name), self._switch, name, version)

    def _switch(self, name: str, version: int | None) -> dict[str, Any]:
        found = self.get(name)
        if version is None:
            if found.previous is None:
                raise ApiError(":no_previous_version")
            version = found.previous
        if version == found.version:
            return {"ok": found.name, "version": version, "previous": found.previous}
        definition = self.version_definition(name, version)
        _, compiled = compile_pipeline(definition, self._lookup_now)
        runtime = found.beside.pop(version, None)
        if runtime is None and found.runtime is not None:
            options = found.options or {}
            sync, telemetry = bool(options.get("sync")), bool(options.get("telemetry"))
            runtime = self._running_version(found.name, compiled, sync, telemetry, version)
        if found.runtime is not None:
            found.beside[found.version] = found.runtime  # keeps running: its events finish there
        found.previous, found.version = found.version, version
        found.definition, found.compiled, found.runtime = copy.deepcopy(definition), compiled, runtime
        found.plugged = {}
        self.on_change(found.key, found)
        log.info("pipeline {name}: version {version} is live (was {previous})", name=found.name,
                 version=version, previous=found.previous)
        return {"ok": found.name, "version": version, "previous": found.previous}
