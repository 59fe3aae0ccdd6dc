"""The routing table (event ``type`` → pipeline name) and type-routed call/cast/stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from kraken.pipeline.engine.runtime import Pipeline
from kraken.pipeline.lifecycle import ApiError
from kraken.pipeline.pipelines import PipelineRegistry


class Routes:
    def __init__(
        self, pipelines: PipelineRegistry, on_change: Callable[[dict[str, str] | None], None] | None = None
    ):
        self.pipelines = pipelines
        self.table: dict[str, str] | None = None
        self.on_change = on_change or (lambda table: None)

    def define(self, table: Any) -> str:
        if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
            raise ApiError("routes must be a JSON object mapping event types to pipeline names")
        self.table = dict(table)
        self.on_change(self.table)
        return "Elixir.Kraken.RoutingTable"

    def get(self) -> dict[str, str]:
        if self.table is None:
            raise ApiError("Routes are not defined!")
        return self.table

    def resolve(self, event: Any) -> Pipeline:
        if not isinstance(event, dict) or "type" not in event:
            raise ApiError(":no_type")
        if self.table is None:
            raise ApiError(":no_routes")
        name = self.table.get(event["type"]) if isinstance(event["type"], str) else None
        if name is None:
            raise ApiError(":no_route_for_type")
        return self.pipelines.runtime(name)

    def groups(self, events: list[Any]) -> list[tuple[Pipeline | None, list[Any], str | None]]:
        """Events grouped by pipeline in order of first appearance; unroutable ones alone."""
        out: list[tuple[Pipeline | None, list[Any], str | None]] = []
        index: dict[int, int] = {}
        for event in events:
            try:
                pipeline = self.resolve(event)
            except ApiError as e:
                out.append((None, [event], e.error))
                continue
            slot = index.get(id(pipeline))
            if slot is None:
                index[id(pipeline)] = len(out)
                out.append((pipeline, [event], None))
            else:
                out[slot][1].append(event)
        return out


def routing_error(error: str) -> list[str]:
    """How a per-event routing error appears inside arrays: ``["error", "no_type"]``."""
    return ["error", error.lstrip(":")]


def _collected(_: None, results: list[Any]) -> list[Any]:
    return results


def call_many(
    groups: list[tuple[Pipeline | None, list[Any], str | None]], debug: bool, timeout: float | None
) -> defer.Deferred[list[Any]]:
    """Each group streams through its pipeline concurrently; results concatenated by group."""
    parts: list[defer.Deferred[list[Any]]] = []
    for pipeline, events, error in groups:
        if pipeline is None:
            parts.append(defer.succeed([routing_error(error or ":no_type")]))
            continue
        out: list[Any] = []
        d = pipeline.stream(events, out.append, debug=debug, timeout=timeout)
        parts.append(d.addCallback(_collected, out))
    return defer.gatherResults(parts, consumeErrors=True).addCallback(
        lambda lists: [x for xs in lists for x in xs]
    )
