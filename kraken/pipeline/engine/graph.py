"""The shapes the compiler, the components and the runtime share: a component's base class,
the compiled graph, and :class:`RunningPipeline`, what a component sees of the started
pipeline walking a packet through it.

A component's ``process(rt, ip)`` returns the next component, ``None`` at the end of the
pipeline, or :data:`CONSUMED` when it took the packet (finished it, dropped it, queued it, or
is waiting on a service).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime

from kraken.pipeline.engine.packets import IP

CONSUMED: Any = object()


class RunningPipeline(Protocol):
    """The started pipeline as components use it (:class:`~kraken.pipeline.engine.runtime.Pipeline`)."""

    clock: IReactorTime
    stopwatch: Callable[[], float]
    sync: bool
    spans: bool

    def run(self, ip: IP, node: Component | None) -> None: ...

    def deliver(self, ip: IP) -> None: ...

    def fail(self, ip: IP, component: Component | None, error: BaseException, copy: int) -> None: ...

    def span(
        self, comp: Component, copy: int, ip: IP, started: float, outcome: str, error: str | None = None
    ) -> None: ...

    def call_service(self, service: tuple[str, str], args: Any) -> Any: ...


@dataclass
class ErrorRoute:
    """Where a component's failed event goes (``on_error``): ``component`` (continue at
    *target* in the same pipeline, the error under the event's ``error`` key), ``pipeline``
    (enter the pipeline named *target*, the same), or ``dead_letter`` (store it, then the
    caller gets the error event naming the dead letter)."""

    kind: str
    target: str | None = None
    node: Component | None = None


class StageFailure(Exception):
    """A component failed; *kind* and *message* go into the error event."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class Component:
    kind = "component"
    on_error: ErrorRoute | None = None

    def __init__(self, name: str, count: int = 1, source: dict[str, Any] | None = None) -> None:
        self.name = name
        self.count = count
        self.source = source or {}
        self.next: Component | None = None
        self.calls = 0
        self.errors = 0
        self.time = 0.0
        self.busy = 0
        self.waiting: deque[IP] = deque()
        self.free = list(range(count - 1, -1, -1))

    def describe(self, pipeline: str, number: int = 0) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.kind,
            "number": number,
            "pipeline": pipeline,
            "count": self.count,
        }

    def process(self, rt: RunningPipeline, ip: IP) -> Any:
        started = rt.stopwatch()
        if ip.history is not None:
            ip.history.append([[self.name, 0], ip.event])
        if ip.trail is not None:
            ip.trail.append(self.name)
        try:
            nxt = self.step(rt, ip)
        except Exception as e:
            self.errors += 1
            self.time += rt.stopwatch() - started
            self.calls += 1
            rt.fail(ip, self, e, 0)
            return CONSUMED
        self.calls += 1
        self.time += rt.stopwatch() - started
        if rt.spans:
            rt.span(self, 0, ip, started, "ok")
        return nxt

    def step(self, rt: RunningPipeline, ip: IP) -> Any:
        return self.next


@dataclass
class Compiled:
    """A pipeline definition as a graph: its first component and all of them."""

    head: Component | None
    components: list[Component] = field(default_factory=list)
    on_error: ErrorRoute | None = None  # the pipeline's default for components without one
    durable: bool = False
    durable_key: Callable[[Any], Any] | None = None  # the idempotency key of an event

    @property
    def routes_errors(self) -> bool:
        return self.on_error is not None or any(c.on_error is not None for c in self.components)
