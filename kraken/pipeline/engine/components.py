"""The component types at run time (stage, switch, goto, done, dead-end, composer, plug, ...),
each a :class:`~kraken.pipeline.engine.graph.Component`.

Synchronous service calls run inline: no Deferred, no reactor turn per event per stage.
A component with ``count`` N runs at most N events at once; the others wait in its queue
and the next free copy takes them (demand-driven load balancing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer, task

from kraken.pipeline.definitions.mapping import MeasuredMapping, Template
from kraken.pipeline.engine.graph import CONSUMED, Component, RunningPipeline, StageFailure
from kraken.pipeline.expr.functions import ValueLimits, check_value
from kraken.pipeline.expr.terms import truthy
from kraken.pipeline.services import CallError

if TYPE_CHECKING:
    from kraken.pipeline.engine.packets import IP


def merge_event(ip: IP, event: dict[str, Any], added: Any) -> None:
    """Make *event* (the packet's event with *added* merged in) the packet's event, refused
    over the value limits. A running bound keeps this O(size of *added*): the whole event
    is measured only when the bound passes a limit (a key replaced again and again)."""
    size, depth = check_value(added, "stage output")
    if ip.size is not None:
        bound, deepest = ip.size[0] + size, max(ip.size[1], depth)
        if bound <= ValueLimits.max_bytes and deepest <= ValueLimits.max_nesting:
            ip.size = (bound, deepest)
            ip.event = event
            return
    ip.size = check_value(event, "event")
    ip.event = event


class GotoPoint(Component):
    kind = "goto_point"


class Tbd(Component):
    kind = "tbd"


class DeadEnd(Component):
    kind = "dead_end"

    def step(self, rt: RunningPipeline, ip: IP) -> Any:
        ip.collector.release()
        return CONSUMED


class Done(Component):
    kind = "done"

    def __init__(self, name: str, condition: Template | None, source: dict[str, Any]) -> None:
        super().__init__(name, 1, source)
        self.condition = condition

    def step(self, rt: RunningPipeline, ip: IP) -> Any:
        if self.condition is None or truthy(self.condition(ip.event)):
            rt.deliver(ip)
            return CONSUMED
        return self.next


class Goto(Component):
    kind = "goto"

    def __init__(self, name: str, to: str, condition: Template | None, source: dict[str, Any]) -> None:
        super().__init__(name, 1, source)
        self.to = to
        self.target: Component | None = None
        self.condition = condition

    def step(self, rt: RunningPipeline, ip: IP) -> Any:
        if self.condition is None or truthy(self.condition(ip.event)):
            return self.target
        return self.next


class Switch(Component):
    kind = "switch"

    def __init__(
        self, name: str, prepare: Template | None, condition: Template, source: dict[str, Any]
    ) -> None:
        super().__init__(name, 1, source)
        self.prepare = prepare
        self.condition = condition
        self.branches: dict[str, Component | None] = {}

    def step(self, rt: RunningPipeline, ip: IP) -> Any:
        args = ip.event if self.prepare is None else self.prepare(ip.event)
        key = self.condition(args)
        if isinstance(key, bool):
            key = "true" if key else "false"
        if not isinstance(key, str) or key not in self.branches:
            known = ", ".join(sorted(self.branches))
            raise StageFailure(
                "RuntimeError", f"unknown branch {key!r} in switch {self.name} (branches: {known})"
            )
        return self.branches[key]


class Plug(Component):
    kind = "plug"

    def __init__(self, name: str, prepare: Template | None, source: dict[str, Any]) -> None:
        super().__init__(name, 1, source)
        self.prepare = prepare

    def step(self, rt: RunningPipeline, ip: IP) -> Any:
        ip.plugs.append(ip.event)
        if self.prepare is not None:
            ip.event = self.prepare(ip.event)
            ip.size = None
        return self.next


class Unplug(Component):
    kind = "unplug"

    def __init__(self, name: str, transform: Template | None, source: dict[str, Any]) -> None:
        super().__init__(name, 1, source)
        self.transform = transform

    def step(self, rt: RunningPipeline, ip: IP) -> Any:
        outer = ip.plugs.pop()
        if self.transform is not None:
            outer = {**outer, **self.transform(ip.event)}
            ip.size = check_value(outer, "event")
        else:
            ip.size = None
        ip.event = outer
        return self.next


class Clone(Component):
    """Legacy: a copy runs through ``to`` (usually ending in a dead-end); the original goes on."""

    kind = "clone"

    def __init__(self, name: str, source: dict[str, Any]) -> None:
        super().__init__(name, 1, source)
        self.branch: Component | None = None

    def step(self, rt: RunningPipeline, ip: IP) -> Any:
        ip.collector.add(1)
        rt.run(ip.spawn(ip.event), self.branch)
        return self.next


class Working(Component):
    """A component that may call a service: slots (copies), queueing, async completion."""

    service: tuple[str, str] | None = None
    timeout: float | None = None
    retry: tuple[int, float] | None = None  # (extra attempts, first backoff in seconds)

    def process(self, rt: RunningPipeline, ip: IP) -> Any:
        if not rt.sync and self.busy >= self.count:
            self.waiting.append(ip)
            return CONSUMED
        self.busy += 1
        copy = self.free.pop() if self.free else 0
        return self.work(rt, ip, copy)

    def work(self, rt: RunningPipeline, ip: IP, copy: int) -> Any:
        started = rt.stopwatch()
        if ip.history is not None:
            ip.history.append([[self.name, copy], ip.event])
        if ip.trail is not None:
            ip.trail.append(self.name)
        try:
            if not isinstance(ip.event, dict):
                raise StageFailure("RuntimeError", "Event must be a map")
            args = self.before(rt, ip, copy)
            if self.service is None:
                result = args
            elif self.retry is None:
                result = rt.call_service(self.service, args)
            else:
                result = self._attempt(rt, args, 0)
            if isinstance(result, defer.Deferred):
                if self.timeout is not None:
                    result.addTimeout(self.timeout, rt.clock, self._timed_out)
                result.addCallbacks(
                    self._resumed,
                    self._failed,
                    callbackArgs=(rt, ip, copy, started),
                    errbackArgs=(rt, ip, copy, started),
                )
                return CONSUMED
            nxt = self.after(rt, ip, copy, result)
        except Exception as e:
            self._release(rt, copy)
            self._account(rt, ip, copy, started, e)
            return CONSUMED
        self._release(rt, copy)
        self._account(rt, ip, copy, started, None)
        if self.waiting:
            self._drain(rt)
        return nxt

    def _resumed(self, result: Any, rt: RunningPipeline, ip: IP, copy: int, started: float) -> None:
        try:
            nxt = self.after(rt, ip, copy, result)
        except Exception as e:
            self._release(rt, copy)
            self._account(rt, ip, copy, started, e)
            self._drain(rt)
            return
        self._release(rt, copy)
        self._account(rt, ip, copy, started, None)
        if nxt is not CONSUMED:
            rt.run(ip, nxt)
        self._drain(rt)

    def _attempt(self, rt: RunningPipeline, args: Any, n: int) -> Any:
        """Call the service; failures of the call step itself are retried with backoff."""
        assert self.service is not None and self.retry is not None
        retries, backoff = self.retry

        def again() -> Any:
            return task.deferLater(rt.clock, backoff * 2**n, self._attempt, rt, args, n + 1)

        try:
            result = rt.call_service(self.service, args)
        except CallError as e:
            if e.step == "call" and n < retries:
                return again()
            raise
        if isinstance(result, defer.Deferred) and n < retries:

            def failed(f: Any) -> Any:
                if f.check(CallError) and f.value.step == "call":
                    return again()
                return f

            result.addErrback(failed)
        return result

    def _timed_out(self, result: Any, timeout: float) -> Any:
        raise StageFailure("TimeoutError", f"{self.kind} {self.name}: no answer within {timeout * 1000:g} ms")

    def _failed(self, failure: Any, rt: RunningPipeline, ip: IP, copy: int, started: float) -> None:
        self._release(rt, copy)
        self._account(rt, ip, copy, started, failure.value)
        self._drain(rt)

    def _release(self, rt: RunningPipeline, copy: int) -> None:
        self.busy -= 1
        if copy not in self.free:
            self.free.append(copy)

    def _drain(self, rt: RunningPipeline) -> None:
        while self.waiting and self.busy < self.count:
            nxt_ip = self.waiting.popleft()
            if nxt_ip.collector.finished:
                continue
            rt.run(nxt_ip, self)

    def _account(
        self, rt: RunningPipeline, ip: IP, copy: int, started: float, error: BaseException | None
    ) -> None:
        self.calls += 1
        self.time += rt.stopwatch() - started
        if error is not None:
            self.errors += 1
            rt.fail(ip, self, error, copy)
        elif rt.spans:
            rt.span(self, copy, ip, started, "ok")

    def before(self, rt: RunningPipeline, ip: IP, copy: int) -> Any:
        raise NotImplementedError

    def after(self, rt: RunningPipeline, ip: IP, copy: int, result: Any) -> Any:
        raise NotImplementedError


class Stage(Working):
    kind = "stage"

    def __init__(
        self,
        name: str,
        service: tuple[str, str] | None,
        prepare: Template | None,
        transform: Template | None,
        count: int,
        source: dict[str, Any],
    ) -> None:
        super().__init__(name, count, source)
        self.service = service
        self.prepare = prepare
        self.transform = transform

    def before(self, rt: RunningPipeline, ip: IP, copy: int) -> Any:
        prepare = self.prepare
        if prepare is None:
            return ip.event
        if isinstance(prepare, MeasuredMapping):
            return prepare.bounded(ip.event, ip.size)
        return prepare(ip.event)

    def after(self, rt: RunningPipeline, ip: IP, copy: int, result: Any) -> Any:
        if self.transform is not None:
            added = self.transform(result)
            merge_event(ip, {**ip.event, **added}, added)
        return self.next


class Composer(Working):
    """Many-to-many with a memo per stream (``call``/``cast`` share one) and per copy.

    ``mode`` is ``composer``, or the legacy ``decomposer``/``recomposer`` built on the same
    mechanics.
    """

    kind = "composer"

    def __init__(
        self,
        name: str,
        service: tuple[str, str] | None,
        prepare: Template | None,
        compose: Template,
        memo: Any,
        count: int,
        mode: str,
        source: dict[str, Any],
    ) -> None:
        super().__init__(name, count, source)
        self.kind = mode
        self.service = service
        self.prepare = prepare
        self.compose = compose
        self.initial_memo = memo
        self.memos: dict[tuple[str, int], Any] = {}

    def before(self, rt: RunningPipeline, ip: IP, copy: int) -> Any:
        args = ip.event if self.prepare is None else self.prepare(ip.event)
        memo = self.memos.get((ip.collector.scope, copy), self.initial_memo)
        if self.kind == "recomposer":
            return {"event": args, "events": memo if memo is not None else []}
        if self.kind == "composer" and isinstance(args, dict):
            args = {k: memo if v == "memo" else v for k, v in args.items()}
        return args

    def after(self, rt: RunningPipeline, ip: IP, copy: int, result: Any) -> Any:
        out = self.compose(result)
        events = out.get("events")
        if self.kind == "recomposer":
            self.memos[(ip.collector.scope, copy)] = events if isinstance(events, list) else []
            event = out.get("event")
            if event is None:
                ip.collector.release()
                return CONSUMED
            ip.event = event
            ip.size = None
            return self.next
        if events is None and self.kind == "decomposer":
            events = []
        if not isinstance(events, list):
            raise StageFailure(
                "RuntimeError", f"composer {self.name}: 'events' must be a list, got {events!r}"
            )
        if self.kind == "composer":
            self.memos[(ip.collector.scope, copy)] = out.get("memo")
        children = [ip.spawn(e) for e in events]
        keep_original = self.kind == "decomposer" and out.get("event") is not None
        if keep_original:
            ip.event = out["event"]
            ip.size = None
        ip.collector.add(len(children) - (0 if keep_original else 1))
        for child in children:
            rt.run(child, self.next)
        if ip.collector.pending <= 0:
            ip.collector.finish()
        return self.next if keep_original else CONSUMED

    def forget(self, scope: str) -> None:
        for key in [k for k in self.memos if k[0] == scope]:
            del self.memos[key]
