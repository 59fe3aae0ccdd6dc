"""Trigger definitions (JSON) checked at define time; every error names its field.

``{"name", "type": "pubsub"|"cron"|"webhook", "pipeline": NAME | "route": true,
"publish_to": TOPIC, ...}`` and per type: pubsub ``topics``; cron ``schedule`` (five fields,
UTC) and ``event``; webhook ``secret`` (may be a ``${env:…}``/``${file:…}`` reference) and
``signature_header``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cronsim import CronSim, CronSimError

from kraken.pipeline.definitions.mapping import DefinitionError
from kraken.pipeline.names import modulize

KINDS = ("pubsub", "cron", "webhook")
MAX_TOPICS = 100
DEFAULT_SIGNATURE_HEADER = "X-Kraken-Signature"


@dataclass
class TriggerDef:
    name: str
    key: str
    kind: str
    definition: dict[str, Any]
    pipeline: str | None = None  # None: routed by the event's type
    publish_to: str | None = None
    topics: list[str] = field(default_factory=list)
    schedule: str = ""
    event: Any = None
    secret: str = ""
    signature_header: str = DEFAULT_SIGNATURE_HEADER


def _topic(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value) or len(value) > 250:
        raise DefinitionError("a topic is a non-empty string without spaces (250 characters at most)", where)
    return value


def compile_trigger(definition: Any) -> TriggerDef:
    if not isinstance(definition, dict):
        raise DefinitionError("a trigger definition must be a JSON object")
    name = definition.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError("Trigger must have name!", "name")
    kind = definition.get("type")
    if kind not in KINDS:
        raise DefinitionError(f"type must be one of {', '.join(KINDS)}", "type")
    trig = TriggerDef(name, modulize(name), kind, copy.deepcopy(definition))
    pipeline, route = definition.get("pipeline"), definition.get("route", False)
    if (pipeline is None) == (route is not True):
        raise DefinitionError('give either "pipeline": NAME or "route": true', "pipeline")
    if pipeline is not None and (not isinstance(pipeline, str) or not pipeline):
        raise DefinitionError("pipeline must be a pipeline name", "pipeline")
    trig.pipeline = pipeline
    if definition.get("publish_to") is not None:
        trig.publish_to = _topic(definition["publish_to"], "publish_to")
    if kind == "pubsub":
        topics = definition.get("topics")
        if not isinstance(topics, list) or not topics or len(topics) > MAX_TOPICS:
            raise DefinitionError(f"topics must be a list of 1 to {MAX_TOPICS} topics", "topics")
        trig.topics = [_topic(t, f"topics[{i}]") for i, t in enumerate(topics)]
    elif kind == "cron":
        schedule = definition.get("schedule")
        if not isinstance(schedule, str):
            raise DefinitionError("schedule must be a cron expression (five fields, UTC)", "schedule")
        try:
            next(CronSim(schedule, datetime.now(UTC)))
        except (CronSimError, StopIteration) as e:
            raise DefinitionError(f"bad cron expression: {e}", "schedule") from None
        trig.schedule = schedule
        event = definition.get("event", {})
        if not isinstance(event, dict):
            raise DefinitionError("event must be a JSON object", "event")
        trig.event = event
    else:
        secret = definition.get("secret")
        if not isinstance(secret, str) or (len(secret) < 16 and "${" not in secret):
            raise DefinitionError(
                "secret must be a string of 16 characters or more (or a ${env:…} reference)", "secret"
            )
        trig.secret = secret
        header = definition.get("signature_header", DEFAULT_SIGNATURE_HEADER)
        if not isinstance(header, str) or not header:
            raise DefinitionError("signature_header must be a header name", "signature_header")
        trig.signature_header = header
    return trig
