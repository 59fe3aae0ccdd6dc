"""A peer store in Redis, so trackers hold no state and any of them answers for any blob.

Per info hash two keys: a hash ``<prefix>p:<info hash>`` (peer id → the record as JSON) and a
sorted set ``<prefix>e:<info hash>`` (peer id → expiry time); per announced address a sorted
set ``<prefix>ip:<address>`` (``<info hash>/<peer id>`` → expiry time) for the
``max_blobs_per_peer`` cap. An announce runs one Lua script (atomic, one round trip) that drops
the blob's expired records, checks both caps and writes the record; every key expires
``ttl`` seconds after its last write, so Redis forgets idle blobs itself.

The client is redis-py (the Redis project's own, well kept), called in the reactor's thread
pool: a few commands per announce, each bounded by ``socket_timeout``. A Redis that does not
answer fails the call; the tracker then hands out the origins alone (see
:class:`~kraken.tracker.server.TrackerAPI`), and agents' next announces fill Redis again after a
restart.
"""

from __future__ import annotations

import json
import random
from typing import Any

import redis
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from kraken.core.reactor import IServerReactor
from kraken.tracker.peerstore import BLOBS_PER_PEER, PEERS_PER_BLOB, PeerLimit, PeerRecord

UPDATE = """
local now = tonumber(ARGV[3])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(gone) do redis.call('HDEL', KEYS[1], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
  return 1
end
if not redis.call('ZSCORE', KEYS[3], ARGV[7]) and redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[6]) then
  return 2
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[7])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[8]) end
return 0
"""


class RedisPeerStore:
    def __init__(
        self,
        reactor: IServerReactor,
        url: str,
        ttl: float = 3600.0,
        max_peers_per_blob: int = 5000,
        max_blobs_per_peer: int = 10000,
        prefix: str = "kraken:tracker:",
        timeout: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        self.reactor = reactor
        self.ttl = ttl
        self.max_peers_per_blob = max_peers_per_blob
        self.max_blobs_per_peer = max_blobs_per_peer
        self.prefix = prefix
        self.rng = rng or random.Random()
        self.redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                          decode_responses=True)
        self.update_script = self.redis.register_script(UPDATE)

    def _thread(self, f: Any, *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    def update(self, info_hash: str, record: PeerRecord) -> Deferred[None]:
        """Add or refresh *record*; fails with :class:`PeerLimit` for a new record over a cap."""
        return self._thread(self._update, info_hash, record, self.reactor.seconds())

    def _update(self, info_hash: str, record: PeerRecord, now: float) -> None:
        keys = [f"{self.prefix}p:{info_hash}", f"{self.prefix}e:{info_hash}", f"{self.prefix}ip:{record.ip}"]
        args: list[str | float] = [
            record.peer_id, json.dumps(record.to_json()), now, now + self.ttl, self.max_peers_per_blob,
            self.max_blobs_per_peer, f"{info_hash}/{record.peer_id}", max(1, int(self.ttl)),
        ]
        refused = self.update_script(keys=keys, args=args)
        if refused == 1:
            cap = self.max_peers_per_blob
            raise PeerLimit(PEERS_PER_BLOB, f"this blob already has {cap} peers (the tracker's cap)")
        if refused == 2:
            cap = self.max_blobs_per_peer
            raise PeerLimit(BLOBS_PER_PEER, f"address {record.ip} already has {cap} announced blobs "
                                            "(the tracker's cap)")

    def sample(self, info_hash: str, limit: int) -> Deferred[list[PeerRecord]]:
        """Up to *limit* live records of *info_hash*, at random."""
        return self._thread(self._sample, info_hash, limit, self.reactor.seconds())

    def _sample(self, info_hash: str, limit: int, now: float) -> list[PeerRecord]:
        live = self.redis.zrangebyscore(f"{self.prefix}e:{info_hash}", f"({now}", "+inf")
        ids: list[str] = [str(i) for i in live]
        chosen = self.rng.sample(ids, min(limit, len(ids)))
        if not chosen:
            return []
        out = []
        for raw in self.redis.hmget(f"{self.prefix}p:{info_hash}", chosen):
            if raw is None:
                continue
            try:
                p = json.loads(raw)
                out.append(PeerRecord(str(p["peer_id"]), str(p["ip"]), int(p["port"]), bool(p["complete"])))
            except (ValueError, KeyError, TypeError):
                continue  # not ours: another writer's key under our prefix
        return out

    def purge(self) -> int:
        """Nothing to do: Redis expires idle keys, and an announce drops its blob's expired records."""
        return 0

    def __len__(self) -> int:
        """Records are shared by every tracker; this one does not count them."""
        return 0

    def close(self) -> None:
        self.redis.close()
