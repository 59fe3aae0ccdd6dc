"""Prometheus view of the running pipelines, computed when ``/metrics`` is scraped (the hot
path only bumps plain counters on the components)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from kraken.pipeline.pipelines import PipelineRegistry
from kraken.pipeline.refusals import Refusals


class PipelineCollector:
    def __init__(self, prefix: str, pipelines: PipelineRegistry, refusals: Refusals | None = None) -> None:
        self.prefix = prefix
        self.pipelines = pipelines
        self.refusals = refusals

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
