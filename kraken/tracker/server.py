"""The tracker's HTTP API: announces (peer handout) and metainfo fetched from the owning origins."""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any
from urllib.parse import unquote

from twisted.internet.defer import inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from kraken.core.digest import Digest
from kraken.core.http import HTTPError, Response, Router, digest_param, read_json
from kraken.core.metrics import Metrics
from kraken.p2p.origins import OriginClient, OriginCluster
from kraken.tracker.peerstore import PeerRecord, PeerStore

log = Logger(namespace="kraken.tracker")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class TTLCache:
    def __init__(self, clock: IReactorTime, size: int = 10000) -> None:
        self.clock = clock
        self.size = size
        self.items: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str) -> Any:
        hit = self.items.get(key)
        if hit is None or hit[0] <= self.clock.seconds():
            return None
        return hit[1]

    def put(self, key: str, value: Any, ttl: float) -> None:
        self.items[key] = (self.clock.seconds() + ttl, value)
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)



class TrackerAPI:
    def __init__(
        self,
        clock: IReactorTime,
        store: PeerStore,
        origins: OriginCluster | None,
        metrics: Metrics,
        announce_interval: float = 3.0,
        announce_limit: int = 50,
        origin_ttl: float = 10.0,
    ) -> None:
        self.clock = clock
        self.store = store
        self.origins = origins
        self.announce_interval = announce_interval
        self.announce_limit = announce_limit
        self.origin_ttl = origin_ttl
        self.owner_cache = TTLCache(clock)
        self.context_cache = TTLCache(clock)
        self.metainfo_cache = TTLCache(clock)
        self.m_announces = metrics.counter("announces", "announce requests", ["complete"])
        self.m_peers = metrics.gauge("peers", "peer records in the store")

    def router(self) -> Router:
        r = Router()
        r.route("GET", "/readiness", lambda req: {"status": "ok"})
        r.route("POST", "/announce/{info_hash}", self.announce)
        r.route("GET", "/namespace/{ns}/blobs/{digest}/metainfo", self.metainfo)
        return r

    @inlineCallbacks
    def _owners(self, d: Digest) -> Any:
        cached = self.owner_cache.get(d.hex)
        if cached is not None:
            return cached
        assert self.origins is not None
        owners = yield self.origins.owners(d)
        self.owner_cache.put(d.hex, owners, self.origin_ttl)
        return owners

    @inlineCallbacks
    def _origin_peers(self, d: Digest) -> Any:
        if self.origins is None:
            return []
        try:
            owners: list[OriginClient] = yield self._owners(d)
        except Exception as e:
            log.warn("cannot learn the owners of {d}: {e}", d=d, e=e)
            return []
        out = []
        for client in owners:
            ctx = self.context_cache.get(client.base)
            if ctx is None:
                try:
                    ctx = yield client.peer_context()
                    self.context_cache.put(client.base, ctx, self.origin_ttl)
                except Exception as e:
                    log.warn("origin {o} gave no peer context: {e}", o=client.base, e=e)
                    self.context_cache.put(client.base, False, 60.0)
                    continue
            if ctx:
                out.append(PeerRecord(ctx["peer_id"], ctx["ip"], int(ctx["port"]), True, True))
        return out

    @inlineCallbacks
    def announce(self, request: Request, info_hash: str) -> Any:
        if not _HEX64.match(info_hash):
            raise HTTPError(400, "BAD_INFO_HASH", "info hash must be 64 lowercase hex characters")
        body = read_json(request)
        try:
            d = Digest.parse(body["digest"])
            peer = body["peer"]
            record = PeerRecord(
                str(peer["peer_id"]), str(peer["ip"]), int(peer["port"]), bool(peer["complete"])
            )
        except (KeyError, TypeError, ValueError) as e:
            raise HTTPError(400, "BAD_ANNOUNCE", f"bad announce ({e!s}): needs digest and peer") from None
        if not _HEX40.match(record.peer_id) or not 0 < record.port < 65536:
            raise HTTPError(400, "BAD_ANNOUNCE", "peer_id must be 40 hex characters and port 1..65535")
        self.store.update(info_hash, record)
        self.m_announces.labels(str(record.complete).lower()).inc()
        self.m_peers.set(len(self.store))
        if record.complete:
            return {"peers": None, "interval": self.announce_interval}
        peers = [p for p in self.store.sample(info_hash, self.announce_limit) if p.peer_id != record.peer_id]
        origins = yield self._origin_peers(d)
        if not peers and not origins:
            raise HTTPError(503, "NO_PEERS", "no peers and no origin available for this blob")
        ordered = (
            [p for p in peers if p.complete] + origins + [p for p in peers if not p.complete]
        )
        return {"peers": [p.to_json() for p in ordered], "interval": self.announce_interval}

    @inlineCallbacks
    def metainfo(self, request: Request, ns: str, digest: str) -> Any:
        d = digest_param(digest)
        cached = self.metainfo_cache.get(d.hex)
        if cached is not None:
            return Response(200, cached, {"Content-Type": "application/json"})
        if self.origins is None:
            raise HTTPError(503, "NO_ORIGINS", "this tracker has no origins configured")
        try:
            owners = yield self._owners(d)
            status, body = yield owners[0].metainfo(unquote(ns), d)
        except Exception as e:
            raise HTTPError(502, "ORIGIN_ERROR", f"origin unreachable: {e}") from None
        if status == 200:
            self.metainfo_cache.put(d.hex, body, 300.0)
            return Response(200, body, {"Content-Type": "application/json"})
        if status in (202, 404):
            return Response(status, body, {"Content-Type": "application/json"})
        text = body[:200].decode("utf-8", "replace")
        raise HTTPError(502, "ORIGIN_ERROR", f"origin answered {status}: {text}")
