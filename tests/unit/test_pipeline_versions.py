"""Pipeline versions on a Clock: numbering, switch with events in flight, rollback, diff."""

from __future__ import annotations

from typing import Any

import pytest

from kraken.pipeline.diff import changes, unified
from kraken.pipeline.lifecycle import ApiError
from tests.unit.pipeline_fixtures import World, done


def tagged(tag: str) -> dict[str, Any]:
    return {
        "name": "p",
        "components": [
            {"type": "stage", "transform": {"a": tag}},
            {"service": {"name": "slow-math", "function": "add_one"}, "prepare": {"x": "args['x']"}},
            {"type": "stage", "transform": {"b": tag}},
        ],
    }


def test_numbering_and_history() -> None:
    world = World().math()
    world.pipeline(tagged("v1"), start=False)
    world.pipeline(tagged("v1"), start=False)  # the same body: the same version
    assert [v["version"] for v in world.pipelines.versions("p")] == [1]
    world.pipeline(tagged("v2"), start=False)
    assert [(v["version"], v["live"]) for v in world.pipelines.versions("p")] == [(1, False), (2, True)]
    assert world.pipelines.version_definition("p", 1) == tagged("v1")
    with pytest.raises(ApiError, match=":no_version"):
        world.pipelines.version_definition("p", 3)


def test_switch_keeps_events_on_the_version_they_entered_and_rolls_back() -> None:
    world = World().math()
    v1 = world.pipeline(tagged("v1"))
    assert done(world.pipelines.define_version(tagged("v2"))) == {"ok": "p", "version": 2}
    in_flight = world.pipelines.runtime("p").call({"x": 1, "delay": 1.0})
    assert done(world.pipelines.switch("p", 2)) == {"ok": "p", "version": 2, "previous": 1}
    after = world.pipelines.runtime("p").call({"x": 1, "delay": 1.0})
    world.clock.advance(1.0)
    assert done(in_flight) == {"x": 1, "delay": 1.0, "a": "v1", "b": "v1"}
    assert done(after) == {"x": 1, "delay": 1.0, "a": "v2", "b": "v2"}
    assert world.pipelines.version_runtime("p", 1) is v1  # the old version runs beside
    assert done(world.pipelines.switch("p", None))["version"] == 1
    assert world.pipelines.runtime("p") is v1
    with pytest.raises(ApiError, match=":live_version"):
        done(world.pipelines.stop_version("p", 1))
    assert done(world.pipelines.stop_version("p", 2)) == "ok"
    with pytest.raises(ApiError, match=":not_ready"):
        world.pipelines.version_runtime("p", 2)


def test_diff_paths_and_text() -> None:
    old = {"name": "p", "components": [{"a": 1}, {"b": [1, 2]}], "gone": True}
    new = {"name": "p", "components": [{"a": 2}, {"b": [1]}, {"c": None}], "added": 1}
    assert changes(old, new) == [
        {"path": "components[0].a", "from": 1, "to": 2},
        {"path": "components[1].b[1]", "from": 2},
        {"path": "components[2]", "to": {"c": None}},
        {"path": "gone", "from": True},
        {"path": "added", "to": 1},
    ]
    assert changes(old, old) == [] and unified(old, old, "a", "b") == ""
    assert '-      "a": 1' in unified(old, new, "p v1", "p v2")
