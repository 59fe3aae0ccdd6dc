"""Defined triggers, each running while defined: the sources feeding pipelines and the
publisher of their results.

Delivery: the events of one batch (a poll of a topic, a cron time, a webhook request) go to
the trigger's pipeline (or each to the pipeline its type routes to) as ``call``s; the batch is
done when every event has its results and the durable pipelines among them have committed
their journals. Results go to ``publish_to`` (one JSON record each) when it is set. A batch
whose pipeline is not running fails whole, so a topic's checkpoint does not move past it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from kraken.pipeline.definitions.mapping import DefinitionError
from kraken.pipeline.engine.runtime import Pipeline
from kraken.pipeline.lifecycle import UNDEFINED, ApiError
from kraken.pipeline.names import modulize
from kraken.pipeline.pipelines import PipelineRegistry
from kraken.pipeline.routes import Routes, call_many
from kraken.pipeline.secretrefs import SecretError, SecretPolicy, resolve
from kraken.pipeline.triggers.cron import CronSource
from kraken.pipeline.triggers.definitions import TriggerDef, compile_trigger
from kraken.pipeline.triggers.pubsub import Connector, PubSubSource, result_record
from kraken.pipeline.triggers.webhooks import Webhook
from kraken.pubsub.client import PubSubClient

log = Logger(namespace="kraken.pipeline.triggers")

MAX_TRIGGERS = 1000


class Publisher:
    """Publishes results to kraken-pubsub over a connection of its own, made when needed."""

    def __init__(self, connect: Connector) -> None:
        self.connect = connect
        self.client: PubSubClient | None = None

    @defer.inlineCallbacks
    def publish(self, topic: str, values: list[Any]) -> Any:
        if self.client is None or self.client.closed.called:
            self.client = yield self.connect()
        assert self.client is not None
        return (yield self.client.publish([([topic.encode()], result_record(v)) for v in values]))

    def stop(self) -> None:
        if self.client is not None and self.client.transport is not None:
            self.client.transport.loseConnection()


class Active:
    """A defined trigger and what runs for it."""

    def __init__(self, trig: TriggerDef, source: Any, publisher: Publisher | None) -> None:
        self.trig = trig
        self.source = source
        self.publisher = publisher
        self.delivered = 0
        self.unroutable = 0

    def stop(self) -> None:
        self.source.stop()
        if self.publisher is not None:
            self.publisher.stop()


class TriggerRegistry:
    def __init__(
        self,
        pipelines: PipelineRegistry,
        routes: Routes,
        clock: IReactorTime,
        secret_policy: SecretPolicy,
        connector: Connector | None,
        on_change: Callable[[str, TriggerDef | None], None] | None = None,
        checkpoint: Callable[[str], float | None] | None = None,
        save_checkpoint: Callable[[str, float], None] | None = None,
    ) -> None:
        self.pipelines = pipelines
        self.routes = routes
        self.clock = clock
        self.secret_policy = secret_policy
        self.connector = connector
        self.on_change = on_change or (lambda key, trig: None)
        self.checkpoint = checkpoint or (lambda key: None)
        self.save_checkpoint = save_checkpoint or (lambda key, at: None)
        self.active: dict[str, Active] = {}

    def names(self) -> list[str]:
        return sorted(a.trig.name for a in self.active.values())

    def get(self, name: str) -> Active:
        found = self.active.get(modulize(name))
        if found is None:
            raise ApiError(UNDEFINED)
        return found

    def status(self, name: str) -> dict[str, Any]:
        found = self.get(name)
        return {
            "name": found.trig.name,
            "type": found.trig.kind,
            "delivered": found.delivered,
            "unroutable": found.unroutable,
            **found.source.status(),
        }

    def define(self, definition: Any) -> str:
        trig = compile_trigger(definition)
        if trig.key not in self.active and len(self.active) >= MAX_TRIGGERS:
            raise ApiError(":limit", {"limit": "triggers", "message": f"{MAX_TRIGGERS} triggers at most"})
        needs_pubsub = trig.kind == "pubsub" or trig.publish_to is not None
        if needs_pubsub and self.connector is None:
            raise DefinitionError("kraken-pubsub is not configured (pipeline.pubsub_server)", "type")
        old = self.active.pop(trig.key, None)
        if old is not None:
            old.stop()
        active = self._build(trig)
        self.active[trig.key] = active
        active.source.start()
        self.on_change(trig.key, trig)
        log.info("trigger {name} ({kind}) defined", name=trig.name, kind=trig.kind)
        return trig.name

    def _build(self, trig: TriggerDef) -> Active:
        publisher = None
        source: Any
        if trig.kind == "pubsub":
            assert self.connector is not None
            start = self.checkpoint(trig.key)
            if start is None:  # a new trigger: what is published from now on is its to handle
                start = self.clock.seconds()
                self.save_checkpoint(trig.key, start)
            source = PubSubSource(
                trig.name, trig.topics, self.connector, lambda events: self.deliver(active, events),
                self.clock, start, lambda at: self.save_checkpoint(trig.key, at),
            )
        elif trig.kind == "cron":
            source = CronSource(
                trig.name, trig.schedule, trig.event, lambda events: self.deliver(active, events), self.clock
            )
        else:
            try:
                secret, _ = resolve(trig.secret, self.secret_policy)
            except SecretError as e:
                raise DefinitionError(str(e), "secret") from None
            source = Webhook(trig.name, secret, trig.signature_header)
        if trig.publish_to is not None and trig.kind != "pubsub":
            assert self.connector is not None
            publisher = Publisher(self.connector)
        active = Active(trig, source, publisher)
        return active

    def delete(self, name: str) -> str:
        found = self.get(name)
        del self.active[found.trig.key]
        found.stop()
        self.on_change(found.trig.key, None)
        return "ok"

    def stop_all(self) -> None:
        for active in self.active.values():
            active.stop()

    # -- delivery --------------------------------------------------------------------------------
    def deliver(self, active: Active, events: list[Any]) -> defer.Deferred[list[Any]]:
        trig = active.trig
        try:
            if trig.pipeline is not None:
                groups: list[tuple[Pipeline | None, list[Any], str | None]] = [
                    (self.pipelines.runtime(trig.pipeline), events, None)
                ]
            else:
                groups = self.routes.groups(events)
        except ApiError as e:
            return defer.fail(ApiError(f"pipeline {trig.pipeline}: {e.error}"))
        unroutable = sum(1 for p, _, _ in groups if p is None)
        if unroutable:
            active.unroutable += unroutable
            log.warn("trigger {name}: {n} events without a route dropped", name=trig.name, n=unroutable)
        journals = {id(p.journal): p.journal for p, _, _ in groups if p is not None and p.journal is not None}

        def synced(results: list[Any]) -> Any:
            waits = [j.synced() for j in journals.values()]
            return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: results)

        def published(results: list[Any]) -> Any:
            active.delivered += len(events) - unroutable
            if trig.publish_to is None:
                return results
            values = [r for r in results if not (isinstance(r, list) and r[:1] == ["error"])]
            target = active.publisher or active.source
            return target.publish(trig.publish_to, values).addCallback(lambda _: results)

        done: list[tuple[Pipeline | None, list[Any], str | None]] = [g for g in groups if g[0] is not None]
        return call_many(done, False, None).addCallback(synced).addCallback(published)

    def webhook(self, name: str) -> tuple[Webhook, Active]:
        found = self.active.get(modulize(name))
        if found is None or not isinstance(found.source, Webhook):
            raise ApiError(UNDEFINED)
        return found.source, found
