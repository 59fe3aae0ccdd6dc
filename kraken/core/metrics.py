"""Prometheus metrics: one registry per server, and the ``/metrics`` resource that shows it.

Each server owns a :class:`Metrics` (its own ``CollectorRegistry``), so several servers can
run in one process (as in tests) without their series colliding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from twisted.web.resource import Resource
from twisted.web.server import Request


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


class Metrics:
    """A server's metric family factory; names get the ``kraken_<server>_`` prefix.

    Every server has ``connections_aborted_total{reason}``: connections the core closed
    because they did not prove themselves in time or crowded a cap (:mod:`kraken.core.pending`),
    or took no byte of a response for ``http.send_timeout`` (:mod:`kraken.core.sendwatch`).
    """

    def __init__(self, server: str) -> None:
        self.prefix = "kraken_" + server.replace("-", "_") + "_"
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters: dict[str, Counter] = {}
        self.connections_aborted = self.counter(
            "connections_aborted",
            "connections aborted before they proved themselves (TLS handshake, HTTP headers) or that "
            "stopped taking a response, by reason",
            ["reason"],
        )

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        """The counter *name*; asking again for the same name returns the same counter."""
        if name not in self._counters:
            self._counters[name] = Counter(self.prefix + name, doc, labels, registry=self.registry)
        return self._counters[name]

    def counted(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A counter ``<name>_total`` whose value *read* returns at scrape time: for counts kept
        as plain ints on a hot path, where a :class:`Counter` (a lock per increment) costs."""
        self.registry.register(_ReadCounter(self.prefix + name, doc, read))

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(self.prefix + name, doc, labels, registry=self.registry)

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] | None = None
    ) -> Histogram:
        if buckets is None:
            return Histogram(self.prefix + name, doc, labels, registry=self.registry)
        return Histogram(self.prefix + name, doc, labels, registry=self.registry, buckets=buckets)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def resource(self) -> MetricsResource:
        return MetricsResource(self.registry)


class _ReadCounter(Collector):
    def __init__(self, name: str, doc: str, read: Callable[[], float]) -> None:
        self.name, self.doc, self.read = name, doc, read

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.doc, value=self.read())
