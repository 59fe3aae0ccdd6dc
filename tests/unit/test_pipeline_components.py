"""Pipeline components and runtime semantics (spec 1.4, 3; scenarios of spec 5.1 and 5.3)."""

from __future__ import annotations

from typing import Any

import pytest

from kraken.pipeline.definitions.mapping import DefinitionError
from kraken.pipeline.engine.compiler import compile_pipeline
from kraken.pipeline.engine.runtime import Pipeline
from kraken.pipeline.lifecycle import ApiError
from tests.unit.pipeline_fixtures import ADD, ADD_ONE_X, MULT_X, World, done, stage


@pytest.fixture
def world() -> World:
    return World().math()


def test_stage_with_all_sections(world: World) -> None:
    rt = world.pipeline({"name": "the-pipeline", "components": [ADD]})
    assert rt.call({"x": 1, "y": 2}) == {"x": 1, "y": 2, "z": 3}


@pytest.mark.parametrize(
    ("component", "expected"),
    [
        (
            {
                "type": "stage",
                "service": {"name": "simple-math", "function": "add"},
                "prepare": {"a": "args['x']", "b": "args['y']"},
            },
            {"x": 1, "y": 2},
        ),
        ({**ADD, "transform": {}}, {"x": 1, "y": 2}),
        ({"type": "stage", "transform": {"w": "args['x'] + 10"}}, {"x": 1, "y": 2, "w": 11}),
        (
            {"type": "stage", "prepare": {"q": "args['y']"}, "transform": {"w": "args['q']"}},
            {"x": 1, "y": 2, "w": 2},
        ),
        ({"type": "stage", "prepare": {"q": "args['y']"}}, {"x": 1, "y": 2}),
        ({"type": "tbd"}, {"x": 1, "y": 2}),
        (
            {
                "service": {"name": "simple-math", "function": "add"},
                "download": {"a": "args['x']", "b": "args['y']"},
                "upload": {"z": "args['sum']"},
            },
            {"x": 1, "y": 2, "z": 3},
        ),
    ],
)
def test_stage_variants(world: World, component: dict[str, Any], expected: Any) -> None:
    rt = world.pipeline({"name": "p", "components": [component]})
    assert rt.call({"x": 1, "y": 2}) == expected


def test_error_event_short_circuits_and_names_the_input_step(world: World) -> None:
    rt = world.pipeline({"name": "p", "components": [ADD, {"type": "stage", "transform": {"seen": True}}]})
    result = rt.call({"x": 1, "y": "string"})
    assert result["type"] == "error_ip"
    assert "Expected Number but got String" in result["error"]["message"]
    assert ":input" in result["error"]["message"]
    assert result["ip"]["event"] == {"x": 1, "y": "string"}
    assert result["component"]["name"] == "stage_1"
    assert "seen" not in result["ip"]["event"]


def test_event_must_be_a_map(world: World) -> None:
    rt = world.pipeline({"name": "p", "components": [ADD]})
    assert rt.call([1, 2]) is not None
    assert rt.call("text")["error"]["message"] == "Event must be a map"


def test_stopped_service_gives_not_ready_error_event(world: World) -> None:
    rt = world.pipeline({"name": "p", "components": [ADD]})
    done(world.services.stop("simple-math"))
    assert rt.call({"x": 1, "y": 2})["error"]["message"] == ":not_ready"


def test_helpers_at_pipeline_and_component_level(world: World) -> None:
    rt = world.pipeline(
        {
            "name": "p",
            "helpers": ["Helpers.FetchHelper"],
            "components": [
                {
                    "type": "stage",
                    "helpers": ["Helpers.Math"],
                    "transform": {
                        "x": "inc_by_one(fetch(args, 'x'))",
                        "ok": "(fetch(args, 'x') + get(args, 'x')) <= 5",
                    },
                },
            ],
        }
    )
    assert rt.call({"x": 1}) == {"x": 2, "ok": True}


def test_switch_two_branches(world: World) -> None:
    switch = {
        "type": "switch",
        "name": "my-switch",
        "prepare": {"number": "args['sum']"},
        "condition": 'if args[\'number\'] <= 3, do: "branch1", else: "branch2"',
        "branches": {
            "branch1": [stage("mult_by_two", {"x": "args['sum']"}, {"x": "args['result']"})],
            "branch2": [stage("add_one", {"x": "args['sum']"}, {"x": "args['result']"})],
        },
    }
    summing = stage("add", {"a": "args['a']", "b": "args['b']"}, {"sum": "args['sum']"})
    rt = world.pipeline({"name": "p", "components": [summing, switch]})
    assert rt.call({"a": 1, "b": 2})["x"] == 6
    assert rt.call({"a": 2, "b": 2})["x"] == 5
    assert "number" not in rt.call({"a": 2, "b": 2})


def test_switch_unknown_branch_is_an_error_event(world: World) -> None:
    rt = world.pipeline(
        {
            "name": "p",
            "components": [{"type": "switch", "condition": "args['k']", "branches": {"a": [], "b": []}}],
        }
    )
    assert rt.call({"k": "a"}) == {"k": "a"}
    assert "unknown branch 'zzz'" in rt.call({"k": "zzz"})["error"]["message"]


def test_switch_empty_branch_rejoins_and_dead_end_drops(world: World) -> None:
    rt = world.pipeline(
        {
            "name": "p",
            "components": [
                {
                    "type": "switch",
                    "condition": "if args['x'] > 1, do: 'big', else: 'small'",
                    "branches": {"big": [{"type": "dead-end"}], "small": []},
                },
                {"type": "stage", "transform": {"after": True}},
            ],
        }
    )
    assert rt.call({"x": 1}) == {"x": 1, "after": True}
    assert rt.call({"x": 5}) is None


def test_goto_loop_and_forward_jump(world: World) -> None:
    loop = world.pipeline(
        {
            "name": "loop",
            "components": [
                {"type": "goto-point", "name": "repeat"},
                ADD_ONE_X,
                {"type": "goto", "to": "repeat", "condition": "args['x'] <= 3"},
            ],
        }
    )
    assert loop.call({"x": 1}) == {"x": 4}
    forward = world.pipeline(
        {
            "name": "fwd",
            "components": [
                {"type": "goto", "to": "skip"},
                MULT_X,
                {"type": "goto_point", "name": "skip"},
                ADD_ONE_X,
            ],
        }
    )
    assert forward.call({"x": 1}) == {"x": 2}


def test_goto_to_missing_point_is_a_definition_error(world: World) -> None:
    with pytest.raises(DefinitionError) as info:
        world.pipeline({"name": "p", "components": [{"type": "goto", "to": "nowhere"}]})
    assert info.value.field == "components[0].to"


def test_done_conditional_and_default(world: World) -> None:
    rt = world.pipeline(
        {
            "name": "p",
            "components": [
                ADD_ONE_X,
                {"type": "done", "name": "done-if-more-than-2", "condition": "args['x'] > 2"},
                MULT_X,
            ],
        }
    )
    assert rt.call({"x": 1}) == {"x": 4}
    assert rt.call({"x": 2}) == {"x": 3}
    always = world.pipeline({"name": "q", "components": [{"type": "done"}, MULT_X]})
    assert always.call({"x": 5}) == {"x": 5}


def test_condition_runtime_error_is_an_error_event(world: World) -> None:
    rt = world.pipeline({"name": "p", "components": [{"type": "done", "condition": "args['x'] + 'a'"}]})
    assert rt.call({"x": 1})["error"]["__struct__"] == "ArithmeticError"


MEMO_COMPOSER = {
    "type": "composer",
    "name": "sum-up",
    "memo": 0,
    "compose": {
        "events": "[%{\"n\" => args['n'] + args['memo']}, %{\"n\" => 2}]",
        "memo": "args['n'] + args['memo']",
    },
    "prepare": {"n": "args['n']", "memo": "memo"},
}


def test_composer_memo_is_shared_across_calls(world: World) -> None:
    rt = world.pipeline({"name": "p", "components": [MEMO_COMPOSER]})
    assert rt.call({"n": 1}) == [{"n": 1}, {"n": 2}]
    assert rt.call({"n": 2}) == [{"n": 3}, {"n": 2}]


def test_composer_memo_is_per_stream(world: World) -> None:
    rt = world.pipeline({"name": "p", "components": [MEMO_COMPOSER]})
    for _ in range(2):
        out: list[Any] = []
        done(rt.stream([{"n": 1}, {"n": 1}], out.append))
        assert out == [{"n": 1}, {"n": 2}, {"n": 2}, {"n": 2}]


def test_composer_emitting_nothing_gives_none(world: World) -> None:
    rt = world.pipeline(
        {"name": "p", "components": [{"type": "composer", "compose": {"events": "[] ++ args['e']"}}]}
    )
    assert rt.call({"e": []}) is None
    assert rt.call({"e": [{"a": 1}]}) == {"a": 1}


def test_telegram_decompose_and_recompose(world: World) -> None:
    world.service(
        {
            "name": "telegram",
            "client": {"module": "lambda", "start": {"module": "Telegram"}},
            "interface": {
                "decompose": {"call": {"function": "decompose"}},
                "recompose": {"call": {"function": "recompose"}, "output": {"events": {"type": "array"}}},
            },
        }
    )
    rt = world.pipeline(
        {
            "name": "telegram",
            "components": [
                {
                    "type": "composer",
                    "name": "decomposer",
                    "service": {"name": "telegram", "function": "decompose"},
                    "compose": {"events": "args['events']"},
                },
                {
                    "type": "composer",
                    "name": "recomposer",
                    "memo": "",
                    "service": {"name": "telegram", "function": "recompose"},
                    "prepare": {"word": "args['word']", "memo": "memo"},
                    "compose": {"events": "args['events']", "memo": "args['memo']"},
                },
            ],
        }
    )
    out: list[Any] = []
    done(rt.stream([{"string": "Hello John and others"}, {"string": "flush"}], out.append))
    assert out == [{"line": "Hello John"}, {"line": "and others"}]


def test_legacy_decomposer_recomposer_and_clone(world: World) -> None:
    world.service(
        {
            "name": "spy",
            "client": {"module": "lambda", "start": {"module": "SimpleMath"}},
            "interface": {"log": {"call": {"function": "log"}}},
        }
    )
    rt = world.pipeline(
        {
            "name": "p",
            "components": [
                {
                    "type": "clone",
                    "name": "my-clone",
                    "to": [
                        {
                            "type": "stage",
                            "name": "log",
                            "service": {"name": "spy", "function": "log"},
                            "transform": {"logged": True},
                        },
                        {"type": "dead-end"},
                    ],
                },
                {
                    "type": "decomposer",
                    "name": "split",
                    "decompose": {"events": "args['items']", "event": "args"},
                },
                {
                    "type": "recomposer",
                    "name": "join",
                    "recompose": {
                        "event": "if args['events'] != [], do: %{'pair' =>args['events'] ++ [args['event']]}",
                        "events": "if args['events'] != [], do: [], else: args['events'] ++ [args['event']]",
                    },
                },
            ],
        }
    )
    event = {"items": [{"i": 1}, {"i": 2}, {"i": 3}]}
    assert rt.call(event) == [{"pair": [{"i": 1}, {"i": 2}]}, {"pair": [{"i": 3}, event]}]
    assert rt.stats()["components"]["log"]["calls"] == 1


def test_plug_with_adapters_copies_the_inner_pipeline(world: World) -> None:
    world.pipeline(
        {
            "name": "AddMultPipeline",
            "components": [ADD, stage("mult_by_two", {"x": "args['z']"}, {"z": "args['result']"})],
        },
        start=False,
    )
    rt = world.pipeline(
        {
            "name": "outer",
            "components": [
                {
                    "type": "plug",
                    "name": "my-plug",
                    "pipeline": "add_mult_pipeline",
                    "prepare": {"x": "args['xxx']", "y": "args['yyy']"},
                    "transform": {"zzz": "args['z']"},
                }
            ],
        }
    )
    assert rt.call({"xxx": 1, "yyy": 2}) == {"xxx": 1, "yyy": 2, "zzz": 6}
    world.pipeline(
        {"name": "AddMultPipeline", "components": [{"type": "stage", "transform": {"z": 0}}]}, start=False
    )
    done(world.pipelines.stop("outer"))
    done(world.pipelines.start("outer"))
    assert world.pipelines.runtime("outer").call({"xxx": 1, "yyy": 2})["zzz"] == 6


def test_plug_of_undefined_pipeline_is_rejected(world: World) -> None:
    with pytest.raises(DefinitionError, match="not defined"):
        world.pipeline({"name": "p", "components": [{"type": "plug", "pipeline": "nope"}]})


def test_count_limits_concurrency_and_balances(world: World) -> None:
    rt = world.pipeline(
        {
            "name": "p",
            "components": [
                {
                    "type": "stage",
                    "count": 3,
                    "service": {"name": "slow-math", "function": "add_one"},
                    "prepare": {"x": "args['x']"},
                    "transform": {"x": "args['result']"},
                }
            ],
        }
    )
    out: list[Any] = []
    finished = rt.stream([{"x": i} for i in range(9)], out.append)
    assert world.slow.active == 3
    world.clock.advance(1)
    assert world.slow.active == 3 and len(out) == 3
    world.clock.advance(1)
    world.clock.advance(1)
    assert sorted(e["x"] for e in out) == list(range(1, 10))
    assert world.slow.peak == 3
    assert finished.called


def test_per_event_timeout_and_late_results_ignored(world: World) -> None:
    rt = world.pipeline(
        {
            "name": "p",
            "components": [
                {
                    "type": "stage",
                    "service": {"name": "slow-math", "function": "add_one"},
                    "prepare": {"x": "args['x']", "delay": 5},
                    "transform": {"x": "args['result']"},
                }
            ],
        }
    )
    d = rt.call({"x": 1}, timeout=2)
    world.clock.advance(2)
    result = done(d)
    assert result["type"] == "error_ip" and result["error"] == "timeout" and result["component"] == "no_info"
    world.clock.advance(5)
    assert rt.stats()["in_flight"] == 0


def test_infinite_goto_loop_is_bounded(world: World) -> None:
    rt = world.pipeline(
        {"name": "p", "components": [{"type": "goto-point", "name": "a"}, {"type": "goto", "to": "a"}]}
    )
    d = rt.call({"x": 1}, timeout=1)
    assert not d.called
    world.clock.advance(0)
    result = done(d) if d.called else None
    while result is None:
        world.clock.advance(0.5)
        result = done(d) if d.called else None
    assert result["type"] == "error_ip"


def test_stop_fails_in_flight_events(world: World) -> None:
    rt = world.pipeline(
        {
            "name": "p",
            "components": [
                {
                    "type": "stage",
                    "service": {"name": "slow-math", "function": "add_one"},
                    "prepare": {"x": "args['x']"},
                }
            ],
        }
    )
    d = rt.call({"x": 1})
    done(world.pipelines.stop("p"))
    assert "was stopped" in done(d)["error"]["message"]
    world.clock.advance(2)


def test_debug_envelope_has_history(world: World) -> None:
    rt = world.pipeline({"name": "p", "components": [ADD_ONE_X, MULT_X]})
    ip = rt.call({"x": 1}, debug=True)
    assert ip["type"] == "ip" and ip["event"] == {"x": 4} and ip["init_event"] == {"x": 1}
    assert [h[0][0] for h in ip["history"]] == ["stage_2", "stage_1"]
    assert ip["history"][1][1] == {"x": 1}


def test_lifecycle_table(world: World) -> None:
    p = world.pipelines
    definition = {"name": "the-pipeline", "components": [ADD]}
    assert p.status("the-pipeline") == ":undefined"
    for op in (p.start, p.stop, p.delete):
        with pytest.raises(ApiError, match=":undefined"):
            done(op("the-pipeline"))
    done(p.define(definition))
    done(p.define(definition))
    assert p.status("ThePipeline") == ":not_ready"
    with pytest.raises(ApiError, match=":not_ready"):
        done(p.stop("the_pipeline"))
    with pytest.raises(ApiError, match=":not_ready"):
        p.runtime("the-pipeline")
    assert done(p.start("the_pipeline")) == "Elixir.Kraken.Pipelines.ThePipeline"
    assert p.status("the-pipeline") == ":ready"
    with pytest.raises(ApiError, match=":already_started"):
        done(p.start("the-pipeline"))
    with pytest.raises(ApiError, match=":already_started"):
        done(p.define(definition))
    assert done(p.stop("ThePipeline")) == "ok"
    done(p.start("the-pipeline"))
    assert done(p.delete("the-pipeline")) == "ok"
    assert p.status("the-pipeline") == ":undefined"
    assert p.names() == []


@pytest.mark.parametrize(
    ("definition", "field", "message"),
    [
        ({"components": []}, "name", "Pipeline must have name!"),
        ({"name": "p"}, "components", "Missing 'components'!"),
        (
            {"name": "p", "components": [{"type": "nope"}]},
            "components[0].type",
            "Unknown component type nope",
        ),
        (
            {"name": "p", "components": [{"type": "stage", "service": {"function": "f"}}]},
            "components[0].service.name",
            "Missing service name!",
        ),
        (
            {"name": "p", "components": [{"type": "stage", "service": {"name": "s"}}]},
            "components[0].service.function",
            "Missing service function!",
        ),
        (
            {"name": "p", "components": [{"type": "switch", "condition": "true"}]},
            "components[0].branches",
            "Missing branches",
        ),
        (
            {"name": "p", "components": [{"type": "switch", "branches": {"a": []}}]},
            "components[0].condition",
            "Missing condition",
        ),
        ({"name": "p", "components": [{"type": "goto"}]}, "components[0].to", "Missing 'to'"),
        (
            {"name": "p", "components": [{"type": "composer"}]},
            "components[0].compose",
            "Missing 'compose' rules",
        ),
        (
            {"name": "p", "components": [{"type": "composer", "compose": {"memo": "args"}}]},
            "components[0].compose",
            "'events' must be present",
        ),
        (
            {"name": "p", "components": [{"type": "plug"}]},
            "components[0].pipeline",
            '"pipeline" must be provided',
        ),
        (
            {"name": "p", "components": [{"type": "done", "condition": "ifffff args['x'] > 3, do: 1"}]},
            "components[0].condition",
            "SyntaxError",
        ),
        (
            {"name": "p", "components": [{"type": "stage", "transform": {"a": "args[["}}]},
            "components[0].transform.a",
            "SyntaxError",
        ),
        (
            {
                "name": "p",
                "components": [
                    {
                        "type": "switch",
                        "condition": "true",
                        "branches": {"a": [{"type": "stage", "count": 0}]},
                    }
                ],
            },
            "components[0].branches.a[0].count",
            "count",
        ),
        ({"name": "p", "components": [{"name": "x"}, {"name": "x"}]}, "components[0].name", "used twice"),
        ({"name": "p", "helpers": ["Nope"], "components": []}, "helpers[0]", "doesn't exist"),
    ],
)
def test_bad_definitions_name_the_field(
    world: World, definition: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(DefinitionError) as info:
        done(world.pipelines.define(definition))
    assert info.value.field == field
    assert message in str(info.value)


def test_management_operations_on_one_name_are_serialised(world: World) -> None:
    order: list[str] = []
    from twisted.internet import defer

    from kraken.pipeline.clients.base import Client
    from kraken.pipeline.clients.registry import register_client

    class Delayed(Client):
        def start(self, config: dict[str, Any]) -> Any:
            order.append("start-begin")
            d: defer.Deferred[Any] = defer.Deferred()
            world.clock.callLater(1, lambda: (order.append("start-end"), d.callback({"ok": 1})))
            return d

        def stop(self, config: dict[str, Any]) -> Any:
            order.append("stop")

        def call(self, prepared: Any, config: dict[str, Any]) -> Any:
            return {}

    register_client(["DelayedForTests"], Delayed)
    done(
        world.services.define({"name": "d", "client": {"module": "DelayedForTests"}, "interface": {"f": {}}})
    )
    started = world.services.start("d")
    stopped = world.services.stop("d")
    assert order == ["start-begin"] and not stopped.called
    world.clock.advance(1)
    assert order == ["start-begin", "start-end", "stop"]
    assert done(started) == {"ok": 1} and done(stopped) == "ok"


def test_cancelled_call_is_harmless(world: World) -> None:
    rt = world.pipeline(
        {
            "name": "p",
            "components": [
                {
                    "type": "stage",
                    "service": {"name": "slow-math", "function": "add_one"},
                    "prepare": {"x": "args['x']"},
                }
            ],
        }
    )
    d = rt.call({"x": 1})
    d.addErrback(lambda f: None)
    d.cancel()
    world.clock.advance(30)
    assert rt.stats()["in_flight"] == 0 and rt.stats()["delivered"] == 1


def test_stage_timeout_is_an_error_event_for_that_stage(world: World) -> None:
    rt = world.pipeline(
        {
            "name": "p",
            "components": [
                {
                    "type": "stage",
                    "name": "slow",
                    "timeout": 500,
                    "service": {"name": "slow-math", "function": "add_one"},
                    "prepare": {"x": "args['x']", "delay": 2},
                }
            ],
        }
    )
    d = rt.call({"x": 1})
    world.clock.advance(0.5)
    result = done(d)
    assert result["error"]["__struct__"] == "TimeoutError" and result["component"]["name"] == "slow"
    assert "within 500 ms" in result["error"]["message"]
    world.clock.advance(2)
    assert rt.stats()["components"]["slow"]["busy"] == 0


def test_stream_waits_while_the_reader_is_slow(world: World) -> None:
    rt = world.pipeline({"name": "p", "components": [ADD_ONE_X]})
    out: list[Any] = []
    slow = [True]
    finished = rt.stream([{"x": i} for i in range(5)], out.append, held=lambda: slow[0])
    assert out == [] and not finished.called
    slow[0] = False
    finished.resume()
    assert [e["x"] for e in out] == [1, 2, 3, 4, 5] and finished.called


class Flaky:
    def __init__(self) -> None:
        self.calls = 0

    def call(self, args: Any) -> Any:
        self.calls += 1
        if self.calls <= args["failures"]:
            raise ConnectionError(f"attempt {self.calls} failed")
        return {"ok": self.calls}


@pytest.mark.parametrize(("failures", "expected"), [(0, 1), (2, 3), (3, None)])
def test_stage_retry_with_backoff(world: World, failures: int, expected: int | None) -> None:
    from kraken.pipeline.lambdas.registry import register_lambda

    flaky = Flaky()
    register_lambda("FlakyForTests", flaky)
    world.service(
        {
            "name": "flaky",
            "client": {"module": "lambda", "start": {"module": "FlakyForTests"}},
            "interface": {"call": {"call": {"function": "call"}}},
        }
    )
    rt = world.pipeline(
        {
            "name": "p",
            "components": [
                {
                    "type": "stage",
                    "name": "s",
                    "service": {"name": "flaky", "function": "call"},
                    "retry": {"count": 2, "backoff_ms": 100},
                    "transform": {"ok": "args['ok']"},
                }
            ],
        }
    )
    d = rt.call({"failures": failures})
    if failures:
        world.clock.advance(0.1)
        assert flaky.calls == 2
        world.clock.advance(0.2)
    result = done(d) if hasattr(d, "called") else d
    if expected is None:
        assert "attempt 3 failed" in result["error"]["message"] and flaky.calls == 3
    else:
        assert result == {"failures": failures, "ok": expected}


def test_retry_is_validated(world: World) -> None:
    with pytest.raises(DefinitionError) as info:
        world.pipeline(
            {
                "name": "p",
                "components": [
                    {"type": "stage", "service": {"name": "a", "function": "b"}, "retry": {"count": 99}}
                ],
            }
        )
    assert info.value.field == "components[0].retry.count"


def test_times_come_from_the_injected_clock_and_stopwatch(world: World) -> None:
    world.clock.advance(1000)
    readings = iter(x * 0.25 for x in range(1, 100))
    definition = {"name": "timed", "components": [{**ADD_ONE_X, "name": "add"}]}
    _, compiled = compile_pipeline(definition, lambda name: None)
    rt = Pipeline("timed", compiled, world.services, world.clock, 20.0, stopwatch=lambda: next(readings))
    spans: list[dict[str, Any]] = []
    rt.subscribe(spans.append)
    world.clock.advance(5)
    assert rt.call({"x": 1}) == {"x": 2}
    stats = rt.stats()
    assert stats["since"] == 1000.0
    assert stats["components"]["add"]["sum_time_micro"] == 250000.0
    assert [(s["at"], s["duration_us"]) for s in spans] == [(1005.0, 500000.0)]
