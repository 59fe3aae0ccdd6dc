"""Hostile or random definitions and events: define answers with DefinitionError or works,
and a defined pipeline answers every event with JSON (a result or an error event)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kraken.pipeline.definitions.mapping import DefinitionError
from kraken.pipeline.lifecycle import ApiError
from tests.unit.pipeline_fixtures import World, done

CODE = st.sampled_from(
    [
        "args",
        "args['x']",
        "args['x'] + 1",
        "args['y'] <> 'a'",
        "true",
        "args['x'] > 2",
        "nil",
        "if args['x'], do: 'a', else: 'b'",
        "[args, args]",
        "[]",
        "Enum.map(args['l'], & &1)",
        "args[",
        "length(args)",
        "%{'x' => 1}",
        "1 / args['x']",
        "'a'",
        "get_in(args, ['x', Access.all()])",
    ]
)
VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=3) | CODE,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("xyzl"), inner, max_size=3),
    max_leaves=5,
)


def component(children: Any) -> Any:
    service = st.sampled_from(
        [
            None,
            {"name": "simple-math", "function": "add_one"},
            {"name": "nope", "function": "f"},
            {"name": "slow-math", "function": "add_one"},
        ]
    )
    return st.one_of(
        st.builds(
            lambda p, t, s, c: {
                k: v
                for k, v in {"type": "stage", "prepare": p, "transform": t, "service": s, "count": c}.items()
                if v is not None
            },
            st.none() | st.dictionaries(st.sampled_from("xyz"), VALUE, max_size=2),
            st.none() | st.dictionaries(st.sampled_from("xyz"), VALUE, max_size=2),
            service,
            st.none() | st.integers(0, 3),
        ),
        st.builds(
            lambda c, b: {"type": "switch", "condition": c, "branches": b},
            CODE,
            st.dictionaries(st.sampled_from(["a", "b", "true", "false"]), children, max_size=3),
        ),
        st.builds(lambda c: {"type": "done", "condition": c}, CODE),
        st.builds(
            lambda to, c: {"type": "goto", "to": to, "condition": c}, st.sampled_from(["p", "q"]), CODE
        ),
        st.builds(lambda n: {"type": "goto-point", "name": n}, st.sampled_from(["p", "q"])),
        st.just({"type": "dead-end"}),
        st.builds(
            lambda e, m: {"type": "composer", "compose": {"events": e, "memo": m}, "memo": 0}, CODE, CODE
        ),
        st.builds(lambda t: {"type": t}, st.sampled_from(["tbd", "nope", 3, "Goto_Point"])),
    )


COMPONENTS = st.recursive(
    st.lists(component(st.just([])), max_size=4),
    lambda inner: st.lists(component(inner), max_size=4),
    max_leaves=8,
)
EVENT = st.one_of(
    st.dictionaries(
        st.sampled_from("xyl"),
        st.none() | st.integers(-2, 5) | st.text(max_size=2) | st.lists(st.integers(), max_size=2),
        max_size=3,
    ),
    st.integers(),
    st.text(),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(COMPONENTS, st.lists(EVENT, min_size=1, max_size=3))
def test_random_definitions_and_events(components: list[Any], events: list[Any]) -> None:
    world = World(timeout=5).math()
    try:
        rt = world.pipeline({"name": "fuzz", "components": components})
    except (DefinitionError, ApiError):
        return
    assert rt is not None
    rt.max_steps = 20_000  # goto loops end sooner than in production
    for event in events:
        d = rt.call(event)
        for _ in range(30):
            if not hasattr(d, "called") or d.called:
                break
            world.clock.advance(1)
        result = done(d) if hasattr(d, "called") else d
        json.dumps(result)
        if isinstance(result, dict) and result.get("type") == "error_ip":
            assert result["error"]
    out: list[Any] = []
    finished = rt.stream(events, out.append)
    for _ in range(30):
        if finished.called:
            break
        world.clock.advance(1)
    assert finished.called
    json.dumps(out)
