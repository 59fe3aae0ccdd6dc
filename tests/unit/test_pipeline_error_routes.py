"""on_error routes (to a component, a pipeline, the dead-letter store) and replays, on a Clock."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from kraken.pipeline.deadletters import DeadLetters
from kraken.pipeline.definitions.mapping import DefinitionError
from kraken.pipeline.engine.runtime import MAX_ROUTED_ERRORS
from kraken.pipeline.lambdas.registry import register_lambda
from kraken.pipeline.lifecycle import ApiError
from kraken.pipeline.pipelines import PipelineRegistry
from kraken.pipeline.replays import Replays
from tests.unit.pipeline_fixtures import ADD, World, done


class Toggle:
    """A lambda that fails while broken."""

    def __init__(self) -> None:
        self.broken = True

    def work(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.broken:
            raise RuntimeError("the service is broken")
        return {"done": args.get("n")}


TOGGLE = Toggle()
register_lambda("ToggleForTests", TOGGLE)
WORK = {
    "name": "work", "service": {"name": "toggle", "function": "work"}, "transform": {"done": "args['done']"}
}


@pytest.fixture
def world() -> World:
    w = World().math()
    w.service(
        {
            "name": "toggle",
            "client": {"module": "lambda", "start": {"module": "ToggleForTests"}},
            "interface": {"work": {"call": {"function": "work"}}},
        }
    )
    w.letters = DeadLetters(sqlite3.connect(":memory:", isolation_level=None), limit=3)  # type: ignore[attr-defined]
    w.pipelines = PipelineRegistry(w.services, w.clock, 20.0, dead_letter=w.letters.add)  # type: ignore[attr-defined]
    TOGGLE.broken = True
    return w


def test_to_a_component_with_the_error_in_the_event(world: World) -> None:
    rt = world.pipeline(
        {
            "name": "p",
            "components": [
                {**ADD, "name": "add", "on_error": {"component": "fallback"}},
                {"name": "ok", "type": "done"},
                {"name": "fallback", "type": "stage", "transform": {"z": "args['error']['component']"}},
            ],
        }
    )
    assert rt is not None
    assert rt.call({"x": 1, "y": 2}) == {"x": 1, "y": 2, "z": 3}
    out = rt.call({"x": 1, "y": "two"})
    assert out["z"] == "add" and out["error"]["type"] == "stage"
    assert "Expected Number but got String" in out["error"]["message"]


def test_to_another_pipeline_and_not_running_falls_back_to_the_error_event(world: World) -> None:
    world.pipeline({"name": "errors", "components": [{"type": "stage", "transform": {"handled": True}}]})
    rt = world.pipeline({"name": "p", "on_error": {"pipeline": "errors"}, "components": [ADD]})
    assert rt is not None
    out = rt.call({"x": 1, "y": "two"})
    assert out["handled"] is True and out["error"]["kind"] == "RuntimeError"
    done(world.pipelines.stop("errors"))
    failed = rt.call({"x": 1, "y": "two"})
    assert failed["type"] == "error_ip" and "pipeline errors is not running" in failed["error"]["message"]


@pytest.mark.parametrize(
    "component",
    [
        {"name": "sw", "type": "switch", "condition": "args['k']", "branches": {"a": []}},
        {"name": "comp", "type": "composer", "compose": {"events": "args['nope']", "memo": 1}},
        {"name": "slow", "service": {"name": "slow-math", "function": "add_one"}, "timeout": 100},
        {"name": "stage", "prepare": {"x": "args['k'] + 1"}},
        {"name": "done", "type": "done", "condition": "args['k'] + 1"},
        {"name": "goto", "type": "goto", "to": "caught", "condition": "args['k'] + 1"},
        {"name": "plug", "type": "plug", "pipeline": "inner", "prepare": {"x": "args['k'] + 1"}},
        {"name": "decomposer", "type": "decomposer", "decompose": {"events": "args['k'] + 1"}},
    ],
)
def test_every_component_kind_is_routed(world: World, component: dict[str, Any]) -> None:
    world.pipeline({"name": "inner", "components": [{"type": "tbd"}]}, start=False)
    rt = world.pipeline(
        {
            "name": "p",
            "components": [
                {**component, "on_error": {"component": "caught"}},
                {"type": "done"},
                {"name": "caught", "type": "goto-point"},
                {"name": "catch", "type": "stage", "transform": {"caught": "args['error']['component']"}},
            ],
        }
    )
    assert rt is not None
    d = rt.call({"k": "z", "x": 1, "delay": 5.0})
    if not isinstance(d, dict):
        world.clock.advance(0.2)
        d = done(d)
    assert d["caught"] == component["name"], d


def test_loops_through_on_error_end(world: World) -> None:
    rt = world.pipeline({"name": "p", "components": [{**WORK, "on_error": {"component": "work"}}]})
    assert rt is not None
    out = rt.call({"n": 1})
    assert out["type"] == "error_ip" and f"after {MAX_ROUTED_ERRORS} failures" in out["error"]["message"]


def test_dead_letter_then_replay_at_the_component_and_from_the_start(world: World) -> None:
    letters: DeadLetters = world.letters  # type: ignore[attr-defined]
    rt = world.pipeline(
        {
            "name": "p",
            "components": [
                {"name": "first", "type": "stage", "transform": {"seen": "args['n']"}},
                {**WORK, "on_error": "dead_letter"},
            ],
        }
    )
    assert rt is not None
    out = rt.call({"n": 1})
    assert out["type"] == "error_ip" and isinstance(out["dead_letter"], int)
    entry = letters.get(out["dead_letter"])
    assert entry is not None
    assert entry["event"] == {"n": 1, "seen": 1} and entry["input"] == {"n": 1}
    assert entry["trail"] == ["first", "work"] and entry["component"] == "work"
    assert "the service is broken" in entry["error"]["message"] and entry["attempts"] == 0
    second = rt.call({"n": 2})["dead_letter"]
    assert [s["id"] for s in letters.summaries("P")] == [out["dead_letter"], second]

    replays = Replays(world.pipelines, letters)
    with pytest.raises(ApiError) as failed:
        done(replays.replay(out["dead_letter"], start=False))
    assert failed.value.error == ":replay_failed"
    again = failed.value.details["dead_letter"]
    assert letters.get(out["dead_letter"]) is None and letters.get(again)["attempts"] == 1  # type: ignore[index]

    TOGGLE.broken = False
    assert done(replays.replay(again, start=False)) == {"ok": {"n": 1, "seen": 1, "done": 1}}
    assert done(replays.replay(second, start=True)) == {"ok": {"n": 2, "seen": 2, "done": 2}}
    assert letters.summaries() == []
    with pytest.raises(ApiError):
        replays.replay(second, start=True)


def test_the_store_is_bounded(world: World) -> None:
    rt = world.pipeline({"name": "p", "components": [{**WORK, "on_error": "dead_letter"}]})
    assert rt is not None
    ids = [rt.call({"n": i})["dead_letter"] for i in range(4)]
    assert ids[:3] == [1, 2, 3] and ids[3] is None


@pytest.mark.parametrize(
    ("on_error", "field"),
    [
        ("somewhere", "components[0].on_error"),
        ({"component": "nope"}, "components[0].on_error.component"),
        ({"pipeline": ""}, "components[0].on_error"),
    ],
)
def test_bad_routes_are_refused_at_define_time(world: World, on_error: Any, field: str) -> None:
    with pytest.raises(DefinitionError) as e:
        world.pipeline({"name": "p", "components": [{**ADD, "on_error": on_error}]})
    assert e.value.field == field
