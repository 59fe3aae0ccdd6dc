"""Health page: ``/health`` of every server and sparklines of its ``/metrics``.

Sparklines need no per-server knowledge: every metric family is summed over its labels each
poll; counters become per-second rates, gauges stay values; the series that moved are shown.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime

from kraken.dashboard.adapters import each
from kraken.dashboard.sources import Fetcher, FetchError, Server

MAX_FAMILIES = 200  # per server; a page with more is cut
SHOWN = 6  # sparklines per server


def metric_totals(text: str) -> dict[str, tuple[str, float]]:
    """Family name -> (``counter`` or ``gauge``, sum of its samples) of a Prometheus text page.
    Histograms and summaries count as their ``_count`` (events seen)."""
    out: dict[str, tuple[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if len(out) >= MAX_FAMILIES:
            break
        if family.name.endswith("_created"):  # a counter's creation time, not a measure
            continue
        if family.type == "counter":
            total = sum(s.value for s in family.samples if s.name.endswith("_total"))
            out[family.name + "_total"] = ("counter", total)
        elif family.type == "gauge":
            out[family.name] = ("gauge", sum(s.value for s in family.samples))
        elif family.type in ("histogram", "summary"):
            total = sum(s.value for s in family.samples if s.name.endswith("_count"))
            out[family.name + "_count"] = ("counter", total)
    return out


class MetricHistory:
    """The last *length* points of every series of every server."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.last: dict[tuple[str, str], tuple[float, float]] = {}  # (server, series) -> (when, total)
        self.points: dict[tuple[str, str], deque[float]] = {}
        self.kinds: dict[tuple[str, str], str] = {}

    def add(self, server: str, now: float, totals: dict[str, tuple[str, float]]) -> None:
        for name, (kind, value) in totals.items():
            key = (server, name)
            if kind == "counter":
                before = self.last.get(key)
                self.last[key] = (now, value)
                if before is None or now <= before[0]:
                    continue
                point = max(0.0, (value - before[1]) / (now - before[0]))
            else:
                point = value
            self.kinds[key] = "rate" if kind == "counter" else "value"
            self.points.setdefault(key, deque(maxlen=self.length)).append(point)

    def series(self, server: str) -> list[dict[str, Any]]:
        """The series of *server* that moved most (spread, then latest value), at most :data:`SHOWN`."""
        found = []
        for (who, name), points in self.points.items():
            if who != server or not points:
                continue
            spread = max(points) - min(points)
            found.append((spread > 0, points[-1] != 0, name, points))
        found.sort(key=lambda f: (not f[0], not f[1], f[2]))
        return [
            {"name": name, "kind": self.kinds[(server, name)], "points": [round(p, 3) for p in points]}
            for _, _, name, points in found[:SHOWN]
        ]


class HealthAdapter:
    def __init__(self, fetcher: Fetcher, servers: list[Server], clock: IReactorTime, history: int) -> None:
        self.fetcher = fetcher
        self.servers = servers
        self.clock = clock
        self.history = MetricHistory(history)

    @inlineCallbacks
    def _read(self, server: Server) -> Any:
        try:
            health = yield self.fetcher.get_json(server, "/health")
            status, failing = health.get("status", "?"), health.get("failing", [])
        except FetchError as e:
            if e.status != 503:
                raise
            status, failing = "unhealthy", []
        try:
            text = yield self.fetcher.get_text(server, "/metrics")
            self.history.add(server.name, self.clock.seconds(), metric_totals(text))
        except (FetchError, ValueError) as e:
            return {"health": status, "failing": failing, "metrics_error": str(e)[:200],
                    "series": self.history.series(server.name)}
        return {"health": status, "failing": failing, "series": self.history.series(server.name)}

    def collect(self) -> Deferred[dict[str, Any]]:
        return each(self.servers, self._read).addCallback(lambda rows: {"servers": rows})
