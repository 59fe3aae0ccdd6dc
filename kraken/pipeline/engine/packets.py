"""Information packets (an event on its way), result collectors, and the JSON shapes of
debug envelopes and error events.

A :class:`Collector` belongs to one injected event: it counts the packets still alive for it
(composers add some, dead-ends remove some), gathers results, and finishes exactly once:
when nothing is alive, or when its timeout fires first.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall

_refs = itertools.count(1)


def new_ref() -> str:
    return f"0.{next(_refs)}"


class IP:
    """One event travelling through a pipeline."""

    __slots__ = (
        "collector", "composed", "errors", "event", "history", "init_event", "plugs", "size", "steps", "trail"
    )

    def __init__(self, event: Any, collector: Collector, init_event: Any = None) -> None:
        self.event = event
        self.init_event = event if init_event is None else init_event
        self.collector = collector
        self.history: list[Any] | None = [] if collector.debug else None
        self.plugs: list[Any] = []
        self.composed = False
        self.steps = 0
        self.errors = 0  # failures routed by on_error so far
        self.trail: list[str] | None = None  # components visited, kept when errors are routed
        # (expanded size, depth) the event has at most, once measured; None: not yet
        self.size: tuple[int, int] | None = None

    def spawn(self, event: Any) -> IP:
        child = IP(event, self.collector, self.init_event)
        child.plugs = list(self.plugs)
        child.composed = True
        if self.trail is not None:
            child.trail = list(self.trail)
        if self.history is not None:
            child.history = list(self.history)
        return child

    def envelope(self, pipeline_module: str) -> dict[str, Any]:
        c = self.collector
        return {
            "type": "ip",
            "event": self.event,
            "init_event": self.init_event,
            "history": list(reversed(self.history)) if self.history is not None else [],
            "composed": self.composed,
            "plugs": list(self.plugs),
            "ref": c.ref,
            "stream_ref": c.stream_ref,
            "destination": c.destination,
            "pipeline_module": pipeline_module,
            "debug": c.debug,
            "sync_path": None,
        }


def error_event(
    ip: IP | None,
    collector: Collector,
    pipeline_module: str,
    error: Any,
    component: Any,
    stacktrace: list[str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "error_ip",
        "error": error,
        "stacktrace": stacktrace or [],
        "ip": ip.envelope(pipeline_module) if ip is not None else None,
        "component": component,
        "pipeline_module": pipeline_module,
        "ref": collector.ref,
        "stream_ref": collector.stream_ref,
        "history": list(reversed(ip.history)) if ip is not None and ip.history is not None else [],
        "plugs": list(ip.plugs) if ip is not None else [],
    }
    return body


def exception_error(kind: str, message: str) -> dict[str, Any]:
    return {"__exception__": True, "__struct__": kind, "message": message}


class Collector:
    """Results of one injected event; ``on_result`` sees each, ``on_done`` the end."""

    __slots__ = (
        "debug",
        "destination",
        "event_id",
        "finished",
        "live_in",
        "on_done",
        "on_result",
        "pending",
        "ref",
        "results",
        "scope",
        "stream_ref",
        "timer",
    )

    def __init__(
        self,
        debug: bool = False,
        scope: str = "global",
        stream_ref: str | None = None,
        on_result: Callable[[Any], None] | None = None,
    ) -> None:
        self.pending = 1
        self.results: list[Any] = []
        self.finished = False
        self.debug = debug
        self.scope = scope
        self.ref = new_ref()
        self.stream_ref = stream_ref
        self.destination = "0.0.1"
        self.on_result = on_result
        self.on_done: Callable[[Collector], None] | None = None
        self.timer: IDelayedCall | None = None
        self.live_in: set[Collector] | None = None
        self.event_id: str | None = None  # a durable pipeline's journal id

    def add(self, n: int) -> None:
        self.pending += n

    def result(self, value: Any, alive: bool = False) -> None:
        """Deliver *value*; unless *alive*, it also ends one packet."""
        if self.finished:
            return
        if self.on_result is not None:
            self.on_result(value)
        else:
            self.results.append(value)
        if not alive:
            self.release()

    def release(self) -> None:
        if self.finished:
            return
        self.pending -= 1
        if self.pending <= 0:
            self.finish()

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if self.live_in is not None:
            self.live_in.discard(self)
        if self.on_done is not None:
            self.on_done(self)

    def value(self) -> Any:
        """``call``'s answer: one result, a list of several, or ``None`` for none."""
        if not self.results:
            return None
        if len(self.results) == 1:
            return self.results[0]
        return list(self.results)
