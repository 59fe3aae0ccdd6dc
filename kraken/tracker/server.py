"""The tracker's HTTP API: announces (peer handout) and metainfo fetched from the owning origins.

An announce is refused (and counted in ``announces_refused_total`` by reason, logged once per
offending source address and reason) when the announced ``ip`` is not the address the request
comes from, unless the client's certificate role or its address is trusted to announce for
others (``address``); when its info hash does not match the blob's metainfo where the tracker
holds or can fetch it (``info_hash``), or the origins do not know the blob (``unknown_blob``);
and when a new record would exceed the store's caps (``peers_per_blob``, ``blobs_per_peer``).
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from twisted.internet.defer import inlineCallbacks, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from kraken.core.digest import Digest
from kraken.core.http import HTTPError, Response, Router, digest_param, read_json
from kraken.core.httpclient import BadJSONResponse, HTTPStatusError, error_text
from kraken.core.metrics import Metrics
from kraken.core.offenders import OncePerOffender
from kraken.core.tls import request_identity
from kraken.p2p.metainfo import MetaInfo, MetaInfoError
from kraken.p2p.origins import OriginClient, OriginCluster
from kraken.tracker.peerstore import BLOBS_PER_PEER, PeerLimit, PeerRecord, PeerStore
from kraken.tracker.redisstore import RedisPeerStore

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


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN_BLOB = "unknown"  # what _expected_info_hash returns when the origins do not know the blob


def parse_networks(texts: Iterable[str]) -> list[Network]:
    """CIDRs (``10.0.0.0/8``, a bare address) from the config; ``ValueError`` names a bad one."""
    out = []
    for text in texts:
        try:
            out.append(ipaddress.ip_network(str(text), strict=False))
        except ValueError:
            raise ValueError(f"tracker.trusted_networks: {text!r} is not an address or CIDR") from None
    return out


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrackerAPI:
    def __init__(
        self,
        clock: IReactorTime,
        store: PeerStore | RedisPeerStore,
        origins: OriginCluster | None,
        metrics: Metrics,
        announce_interval: float = 3.0,
        announce_limit: int = 50,
        origin_ttl: float = 10.0,
        trusted_roles: Iterable[str] = (),
        trusted_networks: Iterable[Network] = (),
    ) -> None:
        self.clock = clock
        self.store = store
        self.origins = origins
        self.announce_interval = announce_interval
        self.announce_limit = announce_limit
        self.origin_ttl = origin_ttl
        self.trusted_roles = frozenset(trusted_roles)
        self.trusted_networks = list(trusted_networks)
        self.owner_cache = TTLCache(clock)
        self.context_cache = TTLCache(clock)
        self.metainfo_cache = TTLCache(clock)
        self.info_hash_cache = TTLCache(clock)
        self.offenders: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.m_announces = metrics.counter("announces", "announce requests", ["complete"])
        self.m_refused = metrics.counter("announces_refused", "announces refused, by reason", ["reason"])
        self.m_peers = metrics.gauge("peers", "peer records in the store")
        self.m_bad_answers = metrics.counter(
            "origin_answers_refused", "origin answers that were not usable JSON", ["answer"]
        )
        self.bad_origins = OncePerOffender()
        self.m_store_errors = metrics.counter("peer_store_errors", "peer store calls that failed", ["call"])

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
                    if isinstance(e, BadJSONResponse):
                        self.m_bad_answers.labels("peer_context").inc()
                    log.warn("origin {o} gave no peer context: {e}", o=client.base, e=e)
                    self.context_cache.put(client.base, False, 60.0)
                    continue
            if ctx:
                out.append(PeerRecord(ctx["peer_id"], ctx["ip"], int(ctx["port"]), True, True))
        return out

    def _store_failed(self, what: str, error: Exception) -> None:
        """The peer store did not answer: the announce goes on with the origins alone."""
        self.m_store_errors.labels(what).inc()
        if self.bad_origins.first("peer_store", what):
            log.warn("the peer store failed ({what}): {e}; handing out origins only (logged once)",
                     what=what, e=error)

    def _refuse(self, source: str, reason: str, error: HTTPError) -> HTTPError:
        """Count the refusal, log it once per source address and reason, and return *error*."""
        self.m_refused.labels(reason).inc()
        key = (source, reason)
        if key not in self.offenders:
            self.offenders[key] = None
            while len(self.offenders) > 10000:
                self.offenders.popitem(last=False)
            log.warn(
                "refusing announces from {source} ({reason}): {message}; logged once per source",
                source=source,
                reason=reason,
                message=error.message,
            )
        return error

    def _may_announce_for_others(self, request: Request, source: str) -> bool:
        identity = request_identity(request)
        if identity is not None and identity.role in self.trusted_roles:
            return True
        address = _address(source)
        return address is not None and any(address in net for net in self.trusted_networks)

    @inlineCallbacks
    def _expected_info_hash(self, namespace: str | None, d: Digest) -> Any:
        """The info hash of *d*'s metainfo when held or fetchable, :data:`UNKNOWN_BLOB` when the
        origins do not know *d*, ``None`` when the tracker cannot tell."""
        known = self.info_hash_cache.get(d.hex)
        if known is not None or self.origins is None or namespace is None:
            return known
        try:
            status, _ = yield self._fetch_metainfo(namespace, d)
        except Exception as e:
            log.debug("cannot check the info hash of {d}: {e}", d=d, e=e)
            return None
        return UNKNOWN_BLOB if status == 404 else self.info_hash_cache.get(d.hex)

    @inlineCallbacks
    def announce(self, request: Request, info_hash: str) -> Any:
        client = request.getClientAddress()
        source = str(getattr(client, "host", "?"))
        if not _HEX64.match(info_hash):
            error = HTTPError(400, "BAD_INFO_HASH", "info hash must be 64 lowercase hex characters")
            raise self._refuse(source, "info_hash", error)
        body = read_json(request)
        try:
            d = Digest.parse(body["digest"])
            peer = body["peer"]
            record = PeerRecord(
                str(peer["peer_id"]), str(peer["ip"]), int(peer["port"]), bool(peer["complete"])
            )
            namespace = body.get("namespace")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise HTTPError(400, "BAD_ANNOUNCE", f"bad announce ({e!s}): needs digest and peer") from None
        if not _HEX40.match(record.peer_id) or not 0 < record.port < 65536:
            raise HTTPError(400, "BAD_ANNOUNCE", "peer_id must be 40 hex characters and port 1..65535")
        seen = _address(source)
        own = seen is not None and _address(record.ip) == seen
        if not own and not self._may_announce_for_others(request, source):
            raise self._refuse(
                source,
                "address",
                HTTPError(
                    403,
                    "ADDRESS_MISMATCH",
                    f"announced ip {record.ip} is not the address this announce comes from ({source}); "
                    "announce your own address (advertise_host) or have the tracker trust this source",
                ),
            )
        expected = yield self._expected_info_hash(namespace if isinstance(namespace, str) else None, d)
        if expected == UNKNOWN_BLOB:
            raise self._refuse(source, "unknown_blob", HTTPError(404, "BLOB_UNKNOWN", f"no origin knows {d}"))
        if expected is not None and expected != info_hash:
            raise self._refuse(
                source,
                "info_hash",
                HTTPError(400, "INFO_HASH_MISMATCH", f"info hash {info_hash} is not that of {d}'s metainfo"),
            )
        try:
            yield maybeDeferred(self.store.update, info_hash, record)
        except PeerLimit as e:
            code = "TOO_MANY_BLOBS" if e.reason == BLOBS_PER_PEER else "TOO_MANY_PEERS"
            raise self._refuse(source, e.reason, HTTPError(429, code, str(e))) from None
        except Exception as e:
            self._store_failed("update", e)
        self.m_announces.labels(str(record.complete).lower()).inc()
        self.m_peers.set(len(self.store))
        if record.complete:
            return {"peers": None, "interval": self.announce_interval}
        try:
            sampled = yield maybeDeferred(self.store.sample, info_hash, self.announce_limit)
        except Exception as e:
            self._store_failed("sample", e)
            sampled = []
        peers = [p for p in sampled if p.peer_id != record.peer_id]
        origins = yield self._origin_peers(d)
        if not peers and not origins:
            raise HTTPError(503, "NO_PEERS", "no peers and no origin available for this blob")
        ordered = (
            [p for p in peers if p.complete] + origins + [p for p in peers if not p.complete]
        )
        return {"peers": [p.to_json() for p in ordered], "interval": self.announce_interval}

    @inlineCallbacks
    def _fetch_metainfo(self, namespace: str, d: Digest) -> Any:
        """(status, body) of *d*'s metainfo from the first owner that answers; a 200 is cached with its
        info hash."""
        assert self.origins is not None
        status, body, origin = yield self.origins.metainfo(namespace, d)
        if status == 200:
            try:
                info_hash = MetaInfo.from_json(body).info_hash_hex
            except MetaInfoError as e:
                self.m_bad_answers.labels("metainfo").inc()
                if self.bad_origins.first("metainfo", origin):
                    log.warn("origin {o} sent unreadable metainfo for {d}: {e}; logged once per origin",
                             o=origin, d=d, e=e)
                message = f"origin sent unreadable metainfo for {d}: {e}"
                raise HTTPError(502, "ORIGIN_ERROR", message) from None
            self.metainfo_cache.put(d.hex, body, 300.0)
            self.info_hash_cache.put(d.hex, info_hash, 300.0)
        return status, body

    @inlineCallbacks
    def metainfo(self, request: Request, ns: str, digest: str) -> Any:
        d = digest_param(digest)
        cached = self.metainfo_cache.get(d.hex)
        if cached is not None:
            return Response(200, cached, {"Content-Type": "application/json"})
        if self.origins is None:
            raise HTTPError(503, "NO_ORIGINS", "this tracker has no origins configured")
        try:
            status, body = yield self._fetch_metainfo(unquote(ns), d)
        except HTTPError:
            raise
        except HTTPStatusError as e:
            raise HTTPError(502, "ORIGIN_ERROR", f"origin answered {e}") from None
        except Exception as e:
            why = error_text(e)
            raise HTTPError(503, "ORIGINS_UNAVAILABLE", f"no owning origin reachable: {why}") from None
        if status in (200, 202, 404):
            return Response(status, body, {"Content-Type": "application/json"})
        text = body[:200].decode("utf-8", "replace")
        raise HTTPError(502, "ORIGIN_ERROR", f"origin answered {status}: {text}")
