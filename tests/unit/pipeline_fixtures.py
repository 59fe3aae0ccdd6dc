"""Shared set-up for pipeline unit tests: registries on a Clock, the spec's test services."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from kraken.pipeline.clients.base import ClientContext
from kraken.pipeline.engine.runtime import Pipeline
from kraken.pipeline.lambdas.registry import register_lambda
from kraken.pipeline.pipelines import PipelineRegistry
from kraken.pipeline.services import ServiceRegistry


def done(d: Any) -> Any:
    """The result of an already-fired Deferred (re-raising its failure)."""
    assert isinstance(d, defer.Deferred) and d.called, d
    result: list[Any] = []
    d.addBoth(result.append)
    if hasattr(result[0], "raiseException"):
        result[0].raiseException()
    return result[0]


SIMPLE_MATH = {
    "name": "simple-math",
    "client": {"module": "octopus.lambda", "start": {"module": "SimpleMath"}},
    "interface": {
        "add": {
            "input": {"a": {"type": "number"}, "b": {"type": "number"}},
            "call": {"module": "SimpleMath", "function": "add"},
            "output": {"sum": {"type": "number"}},
        },
        "mult_by_two": {
            "input": {"x": {"type": "number"}},
            "call": {"module": "SimpleMath", "function": "mult_by_two"},
            "output": {"result": {"type": "number"}},
        },
        "add_one": {
            "input": {"x": {"type": "number"}},
            "call": {"module": "SimpleMath", "function": "add_one"},
            "output": {"result": {"type": "number"}},
        },
        "log": {"call": {"module": "SimpleMath", "function": "log"}},
    },
}


class SlowMath:
    """A lambda whose answers come later, released by the test through the Clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.active = 0
        self.peak = 0

    def add_one(self, args: dict[str, Any]) -> defer.Deferred[Any]:
        self.active += 1
        self.peak = max(self.peak, self.active)
        d: defer.Deferred[Any] = defer.Deferred()

        def fire() -> None:
            self.active -= 1
            try:
                result = {"result": args["x"] + 1}
            except Exception as e:
                d.errback(e)
                return
            d.callback(result)

        self.clock.callLater(args.get("delay", 1.0), fire)
        return d


class World:
    def __init__(self, timeout: float = 20.0) -> None:
        self.clock = Clock()
        self.services = ServiceRegistry(ClientContext(self.clock))
        self.pipelines = PipelineRegistry(self.services, self.clock, timeout)
        self.slow = SlowMath(self.clock)
        register_lambda("SlowMathForTests", self.slow)

    def service(self, definition: dict[str, Any], start: bool = True) -> None:
        done(self.services.define(definition))
        if start:
            done(self.services.start(definition["name"]))

    def pipeline(self, definition: dict[str, Any], start: bool = True, **opts: Any) -> Pipeline | None:
        done(self.pipelines.define(definition))
        if start:
            done(self.pipelines.start(definition["name"], **opts))
            return self.pipelines.runtime(definition["name"])
        return None

    def math(self) -> World:
        self.service(SIMPLE_MATH)
        self.service(
            {
                "name": "slow-math",
                "client": {"module": "lambda", "start": {"module": "SlowMathForTests"}},
                "interface": {"add_one": {"call": {"function": "add_one"}}},
            }
        )
        return self


def stage(function: str, prepare: dict[str, Any], transform: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": "stage",
        "service": {"name": "simple-math", "function": function},
        "prepare": prepare,
        "transform": transform,
        **extra,
    }


ADD = stage("add", {"a": "args['x']", "b": "args['y']"}, {"z": "args['sum']"})
ADD_ONE_X = stage("add_one", {"x": "args['x']"}, {"x": "args['result']"})
MULT_X = stage("mult_by_two", {"x": "args['x']"}, {"x": "args['result']"})
