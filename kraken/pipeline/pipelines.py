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
from kraken.pipeline.lifecycle import ALREADY_STARTED, NOT_READY, READY, UNDEFINED, ApiError, KeyedLock
from kraken.pipeline.names import modulize, pipeline_module
from kraken.pipeline.services import ServiceRegistry

log = Logger(namespace="kraken.pipeline.pipelines")


@dataclass
class Defined:
    name: str
    key: str
    definition: dict[str, Any]
    compiled: Compiled
    runtime: Pipeline | None = None
    options: dict[str, Any] | None = None
    plugged: dict[str, dict[str, Any]] = field(default_factory=dict)


class PipelineRegistry:
    def __init__(
        self,
        services: ServiceRegistry,
        clock: IReactorTime,
        default_timeout: float = 20.0,
        on_change: Callable[[str, Defined | None], None] | None = None,
        dead_letter: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
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
        self, definition: Any, plugged: dict[str, dict[str, Any]] | None = None
    ) -> defer.Deferred[str]:
        """Define; *plugged* gives plug targets as they were (restoring a stored pipeline)."""
        plugged = copy.deepcopy(plugged) if plugged else {}
        name, compiled = compile_pipeline(definition, self._snapshot_lookup(plugged))
        found = Defined(name, modulize(name), copy.deepcopy(definition), compiled, plugged=plugged)
        return self.locks.run(found.key, self._define, found)

    def _define(self, found: Defined) -> str:
        old = self.defined.get(found.key)
        if old is not None and old.runtime is not None:
            raise ApiError(ALREADY_STARTED)
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
        found.runtime = Pipeline(
            found.name, compiled, self.services, self.clock, self.default_timeout, sync, telemetry,
            outlets=self.outlets,
        )
        found.options = {"sync": sync, "telemetry": telemetry}
        self.on_change(found.key, found)
        log.info("pipeline {name} started", name=found.name)
        return pipeline_module(found.name)

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
        if delete:
            del self.defined[found.key]
            self.on_change(found.key, None)
        else:
            self.on_change(found.key, found)
        return "ok"
