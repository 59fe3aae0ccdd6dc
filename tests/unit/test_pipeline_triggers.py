"""Triggers on a Clock: cron schedules feeding pipelines, definitions checked, webhook signatures."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kraken.pipeline.definitions.mapping import DefinitionError
from kraken.pipeline.routes import Routes
from kraken.pipeline.secretrefs import SecretPolicy
from kraken.pipeline.triggers.pubsub import record_event, result_record
from kraken.pipeline.triggers.registry import TriggerRegistry
from kraken.pipeline.triggers.webhooks import Webhook, signature
from tests.unit.pipeline_fixtures import World

T0 = datetime(2026, 12, 5, 10, 0, 30, tzinfo=UTC).timestamp()


@pytest.fixture
def world() -> World:
    w = World().math()
    w.clock.advance(T0)
    w.pipeline({"name": "tick", "components": [{"type": "stage", "transform": {"seen": True}}]})
    return w


def registry(world: World, **kw: Any) -> TriggerRegistry:
    routes = Routes(world.pipelines)
    policy = SecretPolicy(("HOOK_*",), (), {"HOOK_SECRET": "s" * 20})
    return TriggerRegistry(world.pipelines, routes, world.clock, policy, None, **kw)


def test_cron_feeds_its_pipeline_each_minute(world: World) -> None:
    stored: dict[str, Any] = {}
    triggers = registry(world, on_change=lambda key, trig: stored.__setitem__(key, trig))
    triggers.define({"name": "every-minute", "type": "cron", "schedule": "* * * * *", "pipeline": "tick",
                     "event": {"kind": "tick"}})
    assert triggers.status("every-minute")["next_at"] == T0 + 30
    rt = world.pipelines.runtime("tick")
    world.clock.advance(29)
    assert rt.injected == 0
    world.clock.advance(1)
    world.clock.advance(60)
    assert rt.delivered == 2 and triggers.status("every-minute")["fired"] == 2
    assert "EveryMinute" in stored
    assert triggers.delete("every-minute") == "ok"
    world.clock.advance(120)
    assert rt.delivered == 2 and stored["EveryMinute"] is None


@pytest.mark.parametrize(
    ("definition", "field"),
    [
        ({"type": "cron", "schedule": "61 * * * *", "pipeline": "tick"}, "schedule"),
        ({"type": "cron", "schedule": "* * * * *"}, "pipeline"),
        ({"type": "cron", "schedule": "* * * * *", "pipeline": "tick", "route": True}, "pipeline"),
        ({"type": "pubsub", "topics": ["a b"], "pipeline": "tick"}, "topics[0]"),
        ({"type": "webhook", "secret": "short", "pipeline": "tick"}, "secret"),
        ({"type": "webhook", "secret": "${env:OTHER}", "pipeline": "tick"}, "secret"),
        ({"type": "pubsub", "topics": ["a"], "pipeline": "tick"}, "type"),  # no pubsub_server
        ({"type": "mail", "pipeline": "tick"}, "type"),
    ],
)
def test_bad_definitions_name_the_field(world: World, definition: dict[str, Any], field: str) -> None:
    with pytest.raises(DefinitionError) as e:
        registry(world).define({"name": "t", **definition})
    assert e.value.field == field


def test_webhook_signatures() -> None:
    hook = Webhook("h", "k" * 20, "X-Sig")
    body = b'{"a": 1}'
    assert hook.verify(body, signature(b"k" * 20, body).encode())
    assert not hook.verify(body + b" ", signature(b"k" * 20, body).encode())
    assert not hook.verify(body, None) and not hook.verify(body, b"sha256=00")
    assert hook.status() == {"accepted": 1, "refused": 3, "signature_header": "X-Sig"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.binary(min_size=1, max_size=20), min_size=1, max_size=3))
def test_any_message_becomes_an_event(payload: bytes, topics: list[bytes]) -> None:
    event = record_event(topics, payload)
    assert isinstance(event, dict)


def test_messages_as_events() -> None:
    assert record_event([b"t"], b'{"a": 1}') == {"a": 1}
    assert record_event([b"t"], b"[1]") == {"topic": "t", "payload": "[1]"}
    deep = b"[" * 100_000 + b"]" * 100_000
    assert record_event([b"t"], deep)["topic"] == "t"  # too deep: kept as text, never raises
    assert record_event([b"t"], b"\xff")["payload"] == "\ufffd"


def test_results_as_messages() -> None:
    assert result_record({"a": [1, 2]}) == b'{"a":[1,2]}'
    nested: Any = 1
    for _ in range(1000):
        nested = [nested]
    assert b'"limit":"response_nesting"' in result_record(nested)
