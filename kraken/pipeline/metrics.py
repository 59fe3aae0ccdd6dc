"""Prometheus view of the running pipelines, computed when ``/metrics`` is scraped (the hot
path only bumps plain counters on the components)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from kraken.pipeline.deadletters import DeadLetters
from kraken.pipeline.journal import Journal
from kraken.pipeline.pipelines import PipelineRegistry
from kraken.pipeline.refusals import Refusals
from kraken.pipeline.triggers.registry import TriggerRegistry


class PipelineCollector:
    def __init__(
        self,
        prefix: str,
        pipelines: PipelineRegistry,
        refusals: Refusals | None = None,
        dead_letters: DeadLetters | None = None,
        journal: Journal | None = None,
        triggers: TriggerRegistry | None = None,
    ) -> None:
        self.prefix = prefix
        self.pipelines = pipelines
        self.refusals = refusals
        self.dead_letters = dead_letters
        self.journal = journal
        self.triggers = triggers

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        labels = ["pipeline", "component", "type"]
        calls = CounterMetricFamily(
            self.prefix + "component_calls", "events a component processed", labels=labels
        )
        errors = CounterMetricFamily(
            self.prefix + "component_errors", "error events a component raised", labels=labels
        )
        seconds = CounterMetricFamily(
            self.prefix + "component_seconds", "time spent in a component", labels=labels
        )
        results = CounterMetricFamily(
            self.prefix + "results", "results delivered", labels=["pipeline", "kind"]
        )
        in_flight = GaugeMetricFamily(
            self.prefix + "in_flight", "events waiting for results", labels=["pipeline"]
        )
        for defined in list(self.pipelines.defined.values()):
            rt = defined.runtime
            if rt is None:
                continue
            for c in rt.components:
                key = [rt.name, c.name, c.kind]
                calls.add_metric(key, c.calls)
                errors.add_metric(key, c.errors)
                seconds.add_metric(key, c.time)
            results.add_metric([rt.name, "event"], rt.delivered)
            results.add_metric([rt.name, "error"], rt.failed)
            results.add_metric([rt.name, "timeout"], rt.timeouts)
            in_flight.add_metric([rt.name], len(rt.live))
        yield from (calls, errors, seconds, results, in_flight)
        if self.refusals is not None:
            refused = CounterMetricFamily(
                self.prefix + "refused", "what a limit refused (logged once per offender)", labels=["limit"]
            )
            for limit, count in sorted(self.refusals.counts.items()):
                refused.add_metric([limit], count)
            yield refused
        yield from self._durability()

    def _durability(self) -> Iterator[Any]:
        if self.dead_letters is not None:
            yield GaugeMetricFamily(
                self.prefix + "dead_letters", "dead letters kept (until replayed or deleted)",
                value=self.dead_letters.count,
            )
        if self.journal is not None:
            yield CounterMetricFamily(
                self.prefix + "journal_commits", "group commits of the durable pipelines' journal",
                value=self.journal.commits,
            )
            yield GaugeMetricFamily(
                self.prefix + "journal_running", "journaled events running now", value=len(self.journal.open)
            )
        if self.triggers is not None:
            counters = {
                name: CounterMetricFamily(self.prefix + f"trigger_{name}", text, labels=["trigger", "type"])
                for name, text in (
                    ("delivered", "events a trigger delivered to pipelines"),
                    ("unroutable", "events a trigger dropped for want of a route"),
                    ("received", "messages a pubsub trigger received"),
                    ("gaps", "retroactive subscriptions kraken-pubsub could not fill"),
                )
            }
            for active in list(self.triggers.active.values()):
                status = {"delivered": active.delivered, "unroutable": active.unroutable,
                          **active.source.status()}
                for name, family in counters.items():
                    if name in status:
                        family.add_metric([active.trig.name, active.trig.kind], status[name])
            yield from counters.values()
