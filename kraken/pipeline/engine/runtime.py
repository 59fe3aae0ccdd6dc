"""A started pipeline: injects events, walks packets through components, collects results.

The walk is a plain loop of ``component.process`` calls. It hands the packet back to the
reactor every ``YIELD_EVERY`` components (so goto loops cannot starve other work and their
caller's timeout can fire) and gives up after ``MAX_STEPS`` components per packet.
Time is injected: the clock (the reactor; its ``seconds()`` stamps ``since`` and span times)
and the stopwatch measuring component durations. Tests drive them with ``task.Clock``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from kraken.pipeline.engine.components import Composer
from kraken.pipeline.engine.graph import CONSUMED, Compiled, Component, ErrorRoute, StageFailure
from kraken.pipeline.engine.packets import IP, Collector, error_event, exception_error, new_ref
from kraken.pipeline.expr import ExprError, LimitError
from kraken.pipeline.incidents import record
from kraken.pipeline.lifecycle import ApiError
from kraken.pipeline.names import pipeline_module
from kraken.pipeline.services import CallError, ServiceRegistry

log = Logger(namespace="kraken.pipeline.runtime")

YIELD_EVERY = 1000
MAX_STEPS = 1_000_000
STREAM_WINDOW = 200
MAX_ROUTED_ERRORS = 16  # failures one event may have routed by on_error before it ends as an error

_END: Any = object()

SpanSink = Callable[[dict[str, Any]], None]


def describe_error(error: BaseException) -> tuple[str, str]:
    """The error kind and message an error event shows (the original's inspect() texts)."""
    if isinstance(error, CallError):
        return "RuntimeError", error.inspect()
    if isinstance(error, ApiError):
        return "RuntimeError", error.error
    if isinstance(error, ExprError):
        return error.kind, str(error)
    if isinstance(error, StageFailure):
        return error.kind, error.message
    return type(error).__name__, f"{type(error).__name__}: {error}"


@dataclass
class Outlets:
    """What ``on_error`` routes reach outside one pipeline: another running pipeline by name
    (``None`` when it is not running), and the dead-letter store (``add`` returns the new
    dead letter's id, or ``None`` when the store refused it)."""

    pipeline: Callable[[str], Pipeline | None]
    dead_letter: Callable[[dict[str, Any]], Any]


class Journal(Protocol):
    """Where a durable pipeline journals what it accepts (:mod:`kraken.pipeline.journal`)."""

    def accept(self, pipeline: Pipeline, collector: Collector, event: Any) -> bool: ...

    def synced(self) -> defer.Deferred[None]: ...


class Streaming(defer.Deferred[None]):
    """A stream being fed: fires once every event has its results. ``resume()`` feeds more once
    the reader caught up; cancelling stops feeding."""

    def __init__(self, canceller: Callable[[defer.Deferred[None]], None]) -> None:
        super().__init__(canceller)
        self.resume: Callable[[], None] = lambda: None


class Pipeline:
    def __init__(
        self,
        name: str,
        compiled: Compiled,
        services: ServiceRegistry,
        clock: IReactorTime,
        default_timeout: float,
        sync: bool = False,
        telemetry: bool = False,
        stopwatch: Callable[[], float] = time.perf_counter,
        outlets: Outlets | None = None,
        version: int | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.outlets = outlets
        self.on_error = compiled.on_error
        self.trail = compiled.routes_errors
        self.key_of = compiled.durable_key
        self.journal: Journal | None = None  # set for durable pipelines
        self.module = pipeline_module(name)
        self.head = compiled.head
        self.components = compiled.components
        self.services = services
        self.clock = clock
        self.stopwatch = stopwatch
        self.default_timeout = default_timeout
        self.sync = sync
        self.telemetry = telemetry
        self.running = True
        self.since = clock.seconds()
        self.injected = 0
        self.delivered = 0
        self.failed = 0
        self.timeouts = 0
        self.max_steps = MAX_STEPS
        self.live: set[Collector] = set()
        self.sinks: list[SpanSink] = []
        self.spans = telemetry

    # -- the walk --------------------------------------------------------------------------------
    def run(self, ip: IP, node: Component | None) -> None:
        collector = ip.collector
        while True:
            if collector.finished:
                return
            if not self.running:
                self.fail(ip, None, StageFailure("RuntimeError", f"pipeline {self.name} was stopped"), 0)
                return
            if node is None:
                self.deliver(ip)
                return
            ip.steps += 1
            if ip.steps % YIELD_EVERY == 0:
                if ip.steps >= self.max_steps:
                    failure = StageFailure("RuntimeError", f"event visited {self.max_steps} components")
                    self.fail(ip, node, failure, 0)
                    return
                self.clock.callLater(0, self.run, ip, node)
                return
            node = node.process(self, ip)
            if node is CONSUMED:
                return

    def deliver(self, ip: IP) -> None:
        self.delivered += 1
        ip.collector.result(ip.envelope(self.module) if ip.collector.debug else ip.event)

    def fail(self, ip: IP, component: Component | None, error: BaseException, copy: int) -> None:
        self.failed += 1
        kind, message = describe_error(error)
        limit = error.limit if isinstance(error, (LimitError, CallError)) else None
        if limit is not None:
            self.services.ctx.refusals.refuse(limit, f"pipeline {self.name}", message)
        if not isinstance(error, (CallError, ApiError, ExprError, StageFailure)):
            where = f"component {getattr(component, 'name', None)} of pipeline {self.name} raised"
            message += f" (error id {record(error, where)}: the traceback is in the server log)"
        if self.spans and component is not None:
            self.span(component, copy, ip, self.stopwatch(), "error", message)
        route = None if component is None else (component.on_error or self.on_error)
        if route is not None and component is not None and route.kind != "dead_letter":
            if ip.errors >= MAX_ROUTED_ERRORS:
                message += f" (after {MAX_ROUTED_ERRORS} failures routed by on_error)"
            elif self._reroute(ip, component, route, kind, message):
                return
            else:
                message += f" (on_error: pipeline {route.target} is not running)"
        described = component.describe(self.name, copy) if component is not None else "no_info"
        body = error_event(ip, ip.collector, self.module, exception_error(kind, message), described)
        if route is not None and route.kind == "dead_letter" and component is not None:
            body["dead_letter"] = self._dead_letter(ip, component, copy, kind, message)
        ip.collector.result(body)

    def _reroute(self, ip: IP, component: Component, route: ErrorRoute, kind: str, message: str) -> bool:
        """Send the failed event on as ``on_error`` says; False when its pipeline is not running."""
        other: Pipeline | None = self
        if route.kind == "pipeline":
            other = self.outlets.pipeline(route.target or "") if self.outlets is not None else None
            if other is None:
                return False
        error = {"component": component.name, "type": component.kind, "kind": kind, "message": message}
        event = ip.event if isinstance(ip.event, dict) else {"event": ip.event}
        ip.event = {**event, "error": error}
        ip.size = None
        ip.errors += 1
        assert other is not None
        other.run(ip, route.node if route.kind == "component" else other.head)
        return True

    def _dead_letter(self, ip: IP, component: Component, copy: int, kind: str, message: str) -> Any:
        if self.outlets is None:
            return None
        return self.outlets.dead_letter(
            {
                "pipeline": self.name,
                "version": self.version,
                "component": component.name,
                "component_type": component.kind,
                "copy": copy,
                "error": {"kind": kind, "message": message},
                "event": ip.event,
                "input": ip.init_event,
                "trail": list(ip.trail) if ip.trail is not None else [],
                "ref": ip.collector.ref,
                "at": self.clock.seconds(),
            }
        )

    def durable_key(self, event: Any) -> str | None:
        """The idempotency key of *event* (a string, or JSON text), None without one."""
        if self.key_of is None:
            return None
        try:
            key = self.key_of(event)
        except Exception:
            return None
        if key is None or isinstance(key, str):
            return key
        return json.dumps(key, sort_keys=True, default=str)

    def find(self, name: str) -> Component | None:
        """The component called *name* (the first, when plugged pipelines reuse a name)."""
        return next((c for c in self.components if c.name == name), None)

    def call_service(self, service: tuple[str, str], args: Any) -> Any:
        return self.services.call(service[0], service[1], args)

    # -- telemetry -------------------------------------------------------------------------------
    def span(
        self, comp: Component, copy: int, ip: IP, started: float, outcome: str, error: str | None = None
    ) -> None:
        record = {
            "pipeline": self.name,
            "component": comp.name,
            "type": comp.kind,
            "number": copy,
            "ref": ip.collector.ref,
            "duration_us": round((self.stopwatch() - started) * 1e6, 1),
            "at": self.clock.seconds(),
            "outcome": outcome,
            "event": ip.event,
        }
        if error is not None:
            record["error"] = error
        for sink in list(self.sinks):
            try:
                sink(record)
            except Exception:
                log.failure("span subscriber failed")

    def subscribe(self, sink: SpanSink) -> Callable[[], None]:
        self.sinks.append(sink)
        self.spans = True

        def unsubscribe() -> None:
            if sink in self.sinks:
                self.sinks.remove(sink)
            self.spans = self.telemetry or bool(self.sinks)

        return unsubscribe

    def stats(self) -> dict[str, Any]:
        comps = {}
        for c in self.components:
            comps[c.name] = {
                "type": c.kind,
                "count": c.count,
                "calls": c.calls,
                "errors": c.errors,
                "sum_time_micro": round(c.time * 1e6, 1),
                "avg_time_micro": round(c.time * 1e6 / c.calls, 2) if c.calls else None,
                "busy": c.busy,
                "queued": len(c.waiting),
            }
        return {
            "pipeline": self.name,
            "since": self.since,
            "injected": self.injected,
            "delivered": self.delivered,
            "errors": self.failed,
            "timeouts": self.timeouts,
            "in_flight": len(self.live),
            "components": comps,
        }

    # -- injection -------------------------------------------------------------------------------
    def inject(
        self,
        collector: Collector,
        event: Any,
        timeout: float | None,
        at: Component | None = None,
        init_event: Any = None,
    ) -> None:
        """Run *event* from the head (or from the component *at*, as a replay does)."""
        self.injected += 1
        if self.journal is None or at is not None or self.journal.accept(self, collector, event):
            ip = IP(event, collector, init_event)
            if self.trail:
                ip.trail = []
            self.run(ip, self.head if at is None else at)
        if collector.finished or timeout is None:
            return
        self.live.add(collector)
        collector.live_in = self.live
        collector.timer = self.clock.callLater(timeout, self._timeout, collector)

    def _timeout(self, collector: Collector) -> None:
        collector.timer = None
        if collector.finished:
            return
        self.timeouts += 1
        body = error_event(None, collector, self.module, "timeout", "no_info")
        collector.result(body, alive=True)
        collector.finish()

    def call(
        self,
        event: Any,
        debug: bool = False,
        timeout: float | None = None,
        at: Component | None = None,
        init_event: Any = None,
    ) -> Any:
        """The result now when everything ran synchronously, else a Deferred of it."""
        collector = Collector(debug=debug)
        self.inject(collector, event, self.default_timeout if timeout is None else timeout, at, init_event)
        if collector.finished:
            return collector.value()
        d: defer.Deferred[Any] = defer.Deferred()
        journaled = collector.on_done  # a durable pipeline's journal watches the end too

        def done(c: Collector) -> None:
            if journaled is not None:
                journaled(c)
            if not d.called:
                d.callback(c.value())

        collector.on_done = done
        return d

    def cast(self, event: Any) -> str:
        """The event's ref (a durable pipeline's: its journal id, to query its result by)."""
        collector = Collector()
        self.inject(collector, event, None)
        return collector.event_id or collector.ref

    def stream(
        self,
        events: list[Any],
        on_result: Callable[[Any], None],
        debug: bool = False,
        timeout: float | None = None,
        window: int = STREAM_WINDOW,
        held: Callable[[], bool] | None = None,
    ) -> Streaming:
        """Feed *events* with at most *window* in flight (one in sync mode, keeping order).

        While *held()* is true (the reader is slow) no new event starts; call the returned
        :class:`Streaming`'s ``resume()`` when it is not. Cancelling it stops feeding.
        """
        stream_ref = new_ref()
        timeout = self.default_timeout if timeout is None else timeout
        window = 1 if self.sync else window
        source = iter(events)
        state = {"open": 0, "exhausted": False, "feeding": False, "cancelled": False}

        def cancel(_: Any) -> None:
            state["cancelled"] = True

        finished = Streaming(cancel)

        def done(_: Collector) -> None:
            state["open"] -= 1
            pump()

        def pump() -> None:
            if state["feeding"]:
                return
            state["feeding"] = True
            try:
                while not state["cancelled"] and state["open"] < window and not (held and held()):
                    event = next(source, _END)
                    if event is _END:
                        state["exhausted"] = True
                        break
                    state["open"] += 1
                    collector = Collector(
                        debug=debug, scope=stream_ref, stream_ref=stream_ref, on_result=on_result
                    )
                    collector.on_done = done
                    self.inject(collector, event, timeout)
            finally:
                state["feeding"] = False
            if state["open"] == 0 and (state["exhausted"] or state["cancelled"]) and not finished.called:
                for c in self.components:
                    if isinstance(c, Composer):
                        c.forget(stream_ref)
                finished.callback(None)

        finished.resume = pump
        pump()
        return finished

    def stop(self) -> None:
        self.running = False
        for collector in list(self.live):
            if not collector.finished:
                body = error_event(
                    None,
                    collector,
                    self.module,
                    exception_error("RuntimeError", f"pipeline {self.name} was stopped"),
                    "no_info",
                )
                collector.result(body, alive=True)
                collector.finish()
