"""Pipeline definitions (JSON) → a graph of run-time components.

Accepts the original's component types (stage, switch, goto, goto-point, done, dead-end,
composer, plug), the legacy ones (clone, decomposer, recomposer; ``download``/``upload`` for
``prepare``/``transform``), ``tbd``, and components without ``type`` as stages. Everything is
checked at define time; errors name the field (``components[1].branches.yes[0].service``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from kraken.pipeline.definitions.helpers import Functions, resolve_helpers
from kraken.pipeline.definitions.mapping import (
    DefinitionError,
    compile_code,
    compile_mapping,
    compile_template,
)
from kraken.pipeline.engine.components import (
    Clone,
    Composer,
    DeadEnd,
    Done,
    Goto,
    GotoPoint,
    Plug,
    Stage,
    Switch,
    Tbd,
    Unplug,
)
from kraken.pipeline.engine.graph import Compiled, Component, ErrorRoute
from kraken.pipeline.names import modulize

TYPES = {
    "stage",
    "switch",
    "goto",
    "goto_point",
    "done",
    "dead_end",
    "composer",
    "plug",
    "tbd",
    "clone",
    "decomposer",
    "recomposer",
}
MAX_COMPONENTS = 10_000
MAX_COUNT = 64
MAX_NESTING = 32

Lookup = Callable[[str], "dict[str, Any] | None"]


class _Scope:
    """Names and gotos of one pipeline body (a plugged pipeline has its own)."""

    def __init__(self) -> None:
        self.names: dict[str, Component] = {}
        self.gotos: list[tuple[Goto, str]] = []
        self.error_routes: list[tuple[ErrorRoute, str]] = []


class Builder:
    def __init__(self, lookup: Lookup, pipeline_helpers: Functions) -> None:
        self.lookup = lookup
        self.pipeline_helpers = pipeline_helpers
        self.all: list[Component] = []
        self.counter = 0
        self.depth = 0
        self.auto_names: dict[int, str] = {}

    def sequence(
        self, comps: Any, cont: Component | None, where: str, scope: _Scope, plugged: tuple[str, ...] = ()
    ) -> Component | None:
        if not isinstance(comps, list):
            raise DefinitionError("must be a list of components", where)
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise DefinitionError(f"components nested deeper than {MAX_NESTING} levels", where)
        for spec in comps:
            if isinstance(spec, dict) and spec.get("name") is None and id(spec) not in self.auto_names:
                self.counter += 1
                kind = str(spec.get("type", "stage")).strip().lower().replace("-", "_")
                self.auto_names[id(spec)] = f"{kind}_{self.counter}"
        current = cont
        for i in range(len(comps) - 1, -1, -1):
            current = self.component(comps[i], current, f"{where}[{i}]", scope, plugged)
        self.depth -= 1
        return current

    def _add(self, comp: Component, scope: _Scope, where: str) -> Component:
        if comp.name in scope.names:
            raise DefinitionError(
                f"component name '{comp.name}' is used twice in this pipeline", f"{where}.name"
            )
        scope.names[comp.name] = comp
        self.all.append(comp)
        if len(self.all) > MAX_COMPONENTS:
            raise DefinitionError(f"more than {MAX_COMPONENTS} components", where)
        return comp

    def component(
        self, spec: Any, nxt: Component | None, where: str, scope: _Scope, plugged: tuple[str, ...]
    ) -> Component | None:
        comp = self._component(spec, nxt, where, scope, plugged)
        if comp is not None and spec.get("on_error") is not None:
            comp.on_error = error_route(spec["on_error"], f"{where}.on_error", scope)
        return comp

    def _component(
        self, spec: Any, nxt: Component | None, where: str, scope: _Scope, plugged: tuple[str, ...]
    ) -> Component | None:
        if not isinstance(spec, dict):
            raise DefinitionError("a component must be a JSON object", where)
        raw_type = spec.get("type", "stage")
        if not isinstance(raw_type, str):
            raise DefinitionError("Missing type", f"{where}.type")
        kind = raw_type.strip().lower().replace("-", "_")
        if kind not in TYPES:
            raise DefinitionError(f"Unknown component type {raw_type}", f"{where}.type")
        name = spec.get("name")
        if name is None:
            name = self.auto_names[id(spec)]
        if not isinstance(name, str) or not name:
            raise DefinitionError("name must be a non-empty string", f"{where}.name")
        helpers = {**self.pipeline_helpers, **resolve_helpers(spec.get("helpers"), f"{where}.helpers")}
        prepare_spec = spec.get("prepare", spec.get("download"))
        transform_spec = spec.get("transform", spec.get("upload"))
        prepare = compile_mapping(prepare_spec, helpers, f"{where}.prepare")
        count = spec.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
            raise DefinitionError(f"count must be an integer from 1 to {MAX_COUNT}", f"{where}.count")

        def condition(required: bool) -> Any:
            source = spec.get("condition")
            if source is None:
                if required:
                    raise DefinitionError("Missing condition", f"{where}.condition")
                return None
            if isinstance(source, bool):
                return lambda args: source
            return compile_code(source, helpers, f"{where}.condition")

        comp: Component
        if kind == "stage":
            service = self.service(spec, where, required=False)
            # the stage measures what its transform adds to the event when it merges it
            transform = compile_mapping(transform_spec, helpers, f"{where}.transform", measured=False)
            comp = Stage(name, service, prepare, transform, count, spec)
        elif kind in ("tbd", "goto_point"):
            comp = (Tbd if kind == "tbd" else GotoPoint)(name, 1, spec)
        elif kind == "dead_end":
            comp = DeadEnd(name, 1, spec)
        elif kind == "done":
            comp = Done(name, condition(False), spec)
        elif kind == "goto":
            to = spec.get("to")
            if not isinstance(to, str) or not to:
                raise DefinitionError("Missing 'to'", f"{where}.to")
            comp = Goto(name, to, condition(False), spec)
            scope.gotos.append((comp, f"{where}.to"))
        elif kind == "switch":
            branches = spec.get("branches")
            if not isinstance(branches, dict) or not branches:
                raise DefinitionError("Missing branches", f"{where}.branches")
            sw = Switch(name, prepare, condition(True), spec)
            self._add(sw, scope, where)
            sw.next = nxt
            for key, comps in branches.items():
                sw.branches[key] = self.sequence(comps, nxt, f"{where}.branches.{key}", scope, plugged)
            return sw
        elif kind == "clone":
            cl = Clone(name, spec)
            self._add(cl, scope, where)
            cl.next = nxt
            cl.branch = self.sequence(spec.get("to", []), None, f"{where}.to", scope, plugged)
            return cl
        elif kind in ("composer", "decomposer", "recomposer"):
            rules_key = {"composer": "compose", "decomposer": "decompose", "recomposer": "recompose"}[kind]
            rules = spec.get(rules_key)
            if not isinstance(rules, dict):
                raise DefinitionError(f"Missing '{rules_key}' rules", f"{where}.{rules_key}")
            if kind != "recomposer" and "events" not in rules:
                raise DefinitionError(
                    f"'events' must be present in the '{rules_key}' rules", f"{where}.{rules_key}"
                )
            compose = compile_template(rules, helpers, f"{where}.{rules_key}")
            service = self.service(spec, where, required=False)
            comp = Composer(name, service, prepare, compose, spec.get("memo"), count, kind, spec)
        else:
            return self.plug(spec, name, nxt, where, scope, plugged, helpers, prepare, transform_spec)
        retry = spec.get("retry")
        if retry is not None:
            if not isinstance(comp, (Stage, Composer)) or comp.service is None:
                raise DefinitionError(
                    "retry is only read on stages and composers with a service", f"{where}.retry"
                )
            count = retry.get("count") if isinstance(retry, dict) else None
            backoff = retry.get("backoff_ms", 100) if isinstance(retry, dict) else None
            if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 10:
                raise DefinitionError("retry.count must be an integer from 0 to 10", f"{where}.retry.count")
            if (
                isinstance(backoff, bool)
                or not isinstance(backoff, (int, float))
                or not 0 <= backoff <= 60_000
            ):
                raise DefinitionError("retry.backoff_ms must be from 0 to 60000", f"{where}.retry.backoff_ms")
            comp.retry = (count, backoff / 1000.0)
        timeout = spec.get("timeout")
        if timeout is not None:
            if not isinstance(comp, (Stage, Composer)):
                raise DefinitionError("timeout is only read on stages and composers", f"{where}.timeout")
            if (
                isinstance(timeout, bool)
                or not isinstance(timeout, (int, float))
                or not 0 < timeout <= 3_600_000
            ):
                raise DefinitionError(
                    "timeout must be milliseconds between 1 and 3600000", f"{where}.timeout"
                )
            comp.timeout = timeout / 1000.0
        comp.next = nxt
        return self._add(comp, scope, where)

    def plug(
        self,
        spec: dict[str, Any],
        name: str,
        nxt: Component | None,
        where: str,
        scope: _Scope,
        plugged: tuple[str, ...],
        helpers: Functions,
        prepare: Any,
        transform_spec: Any,
    ) -> Component:
        target = spec.get("pipeline")
        if not isinstance(target, str) or not target:
            raise DefinitionError('"pipeline" must be provided', f"{where}.pipeline")
        if modulize(target) in plugged:
            raise DefinitionError(f"pipeline '{target}' plugs itself", f"{where}.pipeline")
        inner = self.lookup(target)
        if inner is None:
            raise DefinitionError(f"pipeline '{target}' is not defined", f"{where}.pipeline")
        transform = compile_mapping(transform_spec, helpers, f"{where}.transform")
        plug = Plug(name, prepare, spec)
        unplug = Unplug(f"{name}.unplug", transform, spec)
        self._add(plug, scope, where)
        self._add(unplug, scope, where)
        unplug.next = nxt
        inner_scope = _Scope()
        inner_helpers = resolve_helpers(inner.get("helpers"), f"{where}.pipeline({target}).helpers")
        saved = self.pipeline_helpers
        self.pipeline_helpers = inner_helpers
        try:
            plug.next = self.sequence(
                inner.get("components"),
                unplug,
                f"{where}.pipeline({target}).components",
                inner_scope,
                (*plugged, modulize(target)),
            )
        finally:
            self.pipeline_helpers = saved
        self.resolve_gotos(inner_scope)
        return plug

    def service(self, spec: dict[str, Any], where: str, required: bool) -> tuple[str, str] | None:
        service = spec.get("service")
        if service is None:
            if required:
                raise DefinitionError("Missing service", f"{where}.service")
            return None
        if not isinstance(service, dict):
            raise DefinitionError("service must be an object with name and function", f"{where}.service")
        if not isinstance(service.get("name"), str):
            raise DefinitionError("Missing service name!", f"{where}.service.name")
        if not isinstance(service.get("function"), str):
            raise DefinitionError("Missing service function!", f"{where}.service.function")
        return (service["name"], service["function"])

    def resolve_gotos(self, scope: _Scope) -> None:
        for goto, where in scope.gotos:
            target = scope.names.get(goto.to)
            if target is None or not isinstance(target, GotoPoint):
                raise DefinitionError(f"no goto-point named '{goto.to}'", where)
            goto.target = target
        for route, where in scope.error_routes:
            node = scope.names.get(route.target or "")
            if node is None:
                raise DefinitionError(f"no component named '{route.target}'", f"{where}.component")
            route.node = node


def error_route(spec: Any, where: str, scope: _Scope) -> ErrorRoute:
    """``on_error``: ``"dead_letter"``, ``{"component": NAME}`` or ``{"pipeline": NAME}``."""
    if spec == "dead_letter" or spec == {"dead_letter": True}:
        return ErrorRoute("dead_letter")
    if isinstance(spec, dict) and len(spec) == 1:
        (kind, target), = spec.items()
        if kind in ("component", "pipeline") and isinstance(target, str) and target:
            route = ErrorRoute(kind, target)
            if kind == "component":
                scope.error_routes.append((route, where))
            return route
    raise DefinitionError(
        'on_error must be "dead_letter", {"component": NAME} or {"pipeline": NAME}', where
    )


def compile_pipeline(definition: Any, lookup: Lookup) -> tuple[str, Compiled]:
    """Check *definition*; the pipeline's name and its component graph."""
    if not isinstance(definition, dict):
        raise DefinitionError("a pipeline definition must be a JSON object")
    name = definition.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError("Pipeline must have name!", "name")
    if "components" not in definition:
        raise DefinitionError("Missing 'components'!", "components")
    helpers = resolve_helpers(definition.get("helpers"), "helpers")
    builder = Builder(lookup, helpers)
    scope = _Scope()
    head = builder.sequence(definition["components"], None, "components", scope, (modulize(name),))
    default = definition.get("on_error")
    on_error = error_route(default, "on_error", scope) if default is not None else None
    builder.resolve_gotos(scope)
    compiled = Compiled(head, builder.all, on_error)
    durable = definition.get("durable", False)
    if isinstance(durable, dict):
        unknown = sorted(set(durable) - {"key"})
        if unknown:
            raise DefinitionError(f"unknown key {unknown[0]!r} (durable takes key)", f"durable.{unknown[0]}")
        if durable.get("key") is not None:
            compiled.durable_key = compile_code(durable["key"], helpers, "durable.key")
        durable = True
    if not isinstance(durable, bool):
        raise DefinitionError('durable must be true, false or {"key": CODE}', "durable")
    compiled.durable = durable
    return name, compiled


def stored_copy(definition: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(definition)
