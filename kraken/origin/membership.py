"""The origin cluster as this origin sees it: health of the other members, membership changes.

:class:`ClusterHealth` probes ``GET /health`` of every other member of ``origin.cluster`` (mutual
TLS, role origin) each ``health_interval`` seconds; ``health_fails`` failed probes in a row make
a member unhealthy, ``health_passes`` good ones healthy again. The verdict feeds
:meth:`OriginPlacement.locations`, so ``/blobs/{d}/locations`` (which every client asks) names
the healthy owners of a digest, or the next healthy member in rendezvous order when none is.

:class:`Membership` applies a new ``cluster`` / ``max_replica`` read on SIGHUP: the ring
changes at once, and every stored blob that gains an owner is copied there through the durable
replication queue by one origin: the first of its former owners still in the cluster (every
holder, when none is left).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from treq.client import HTTPClient
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from kraken.core.cas import CAStore
from kraken.core.digest import Digest
from kraken.core.hashring import Ring
from kraken.core.health import ActiveHealthCheck, HealthTable
from kraken.core.httpclient import HTTPStatusError, base_url
from kraken.core.metrics import Metrics
from kraken.core.reactor import IServerReactor
from kraken.core.tls import TLSSettings
from kraken.origin.replication import OriginPlacement, Replicator

log = Logger(namespace="kraken.origin.membership")


class ClusterHealth:
    """Active health checks of the other members; sets ``placement.healthy``."""

    def __init__(
        self,
        clock: IServerReactor,
        placement: OriginPlacement,
        http: HTTPClient,
        tls: TLSSettings | None,
        metrics: Metrics,
        interval: float = 2.0,
        timeout: float = 2.0,
        fails: int = 3,
        passes: int = 2,
    ) -> None:
        self.placement = placement
        self.http = http
        self.tls = tls
        self.table = HealthTable(fails, passes)
        self.checker = ActiveHealthCheck(clock, placement.others, self.probe, self.table, interval, timeout)
        placement.healthy = self.table.healthy
        gauge = metrics.gauge("cluster_member_healthy", "1 while a member passes its checks", ["member"])
        self.table.on_change.append(lambda member, healthy: gauge.labels(member).set(int(healthy)))

    @inlineCallbacks
    def probe(self, address: str) -> Any:
        url = f"{base_url(address, self.tls)}/health"
        response = yield self.http.get(url)
        body = yield response.content()
        if response.code != 200:
            raise HTTPStatusError("GET", url, response.code, body)

    def ready(self) -> bool:
        """Every other member was probed at least once: the healthy owner set is known."""
        return all(member in self.table.members for member in self.placement.others())


def moved_copies(
    old: Ring, new: Ring, me: str, digests: Iterable[Digest], healthy: Callable[[str], bool]
) -> dict[Digest, list[str]]:
    """For the blobs this origin holds: the owners each gains under *new*, when this origin copies it."""
    out: dict[Digest, list[str]] = {}
    for d in digests:
        before = old.locations(d.hex)
        gained = [o for o in new.locations(d.hex) if o not in before and o != me]
        if not gained:
            continue
        staying = [o for o in before if o in new.nodes and (o == me or healthy(o))]
        if not staying or staying[0] == me:
            out[d] = gained
    return out


class Membership:
    """Applies membership changes to the placement and copies blobs to their new owners."""

    def __init__(self, reactor: IServerReactor, placement: OriginPlacement, cas: CAStore,
                 replicator: Replicator) -> None:
        self.reactor = reactor
        self.placement = placement
        self.cas = cas
        self.replicator = replicator

    def _digests(self) -> list[Digest]:
        return [entry.digest for entry in self.cas.entries()]

    @inlineCallbacks
    def apply(self, cluster: list[str], max_replica: int) -> Any:
        """Take the new membership; queue the copies it calls for. Fires with how many blobs move."""
        if list(cluster) == self.placement.cluster and max_replica == self.placement.max_replica:
            log.info("origin.cluster unchanged by the reload")
            return 0
        old = self.placement.ring()
        self.placement.cluster, self.placement.max_replica = list(cluster), max_replica
        new = self.placement.ring()
        log.info("origin.cluster is now {cluster} (max_replica {r})", cluster=new.nodes, r=max_replica)
        pool = self.reactor.getThreadPool()
        digests: list[Digest] = yield deferToThreadPool(self.reactor, pool, self._digests)
        me = self.placement.self_address()
        copies = moved_copies(old, new, me, digests, self.placement.is_healthy)
        for d, owners in copies.items():
            self.replicator.replicate(d, owners)
        log.info("membership change: {n} of {total} stored blobs copied to new owners", n=len(copies),
                 total=len(digests))
        return len(copies)


def changed(d: Deferred[Any]) -> None:
    """Log a failed membership change (the SIGHUP handler does not wait for it)."""
    d.addErrback(lambda f: log.failure("membership change failed", f))
