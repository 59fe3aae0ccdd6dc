"""Disk management: TTI/TTL, a high-water mark evicting least recently read blobs, busy blobs kept."""

from __future__ import annotations

import os
import time
from pathlib import Path

from twisted.internet.task import Clock

from kraken.core.cas import CAStore
from kraken.core.digest import Digest
from kraken.core.eviction import EvictionPolicy, Evictor
from kraken.core.metrics import Metrics

KiB = 1024


def _store(tmp_path: Path, n: int) -> tuple[CAStore, list[Digest], Clock]:
    cas = CAStore(tmp_path / "store")
    clock = Clock()
    clock.advance(time.time())
    digests = []
    for i in range(n):
        data = os.urandom(10 * KiB)
        d = Digest.of_bytes(data)
        tmp = cas.temp_path()
        tmp.write_bytes(data)
        cas.ingest(tmp, d)
        when = clock.seconds() - 1000 + i * 10  # blob i was last read 10*i seconds after blob 0
        os.utime(cas.blob_path(d), (when, when))
        digests.append(d)
    return cas, digests, clock


def test_over_the_high_water_mark_least_recently_read_go_first_never_busy_ones(tmp_path: Path) -> None:
    cas, digests, clock = _store(tmp_path, 10)
    busy = {digests[0]}  # the oldest is being seeded
    dropped: list[Digest] = []
    metrics = Metrics("ev1")
    policy = EvictionPolicy(high_water=0.9, low_water=0.55, capacity=100 * KiB)
    evictor = Evictor(clock, cas, policy, metrics, busy=lambda d: d in busy, before_delete=dropped.append)
    assert evictor.run() == digests[1:6]  # 100 KiB of 100: down to 50 % (4 blobs + the busy one)
    assert dropped == digests[1:6] and all(cas.has(d) for d in [digests[0], *digests[6:]])
    assert metrics.registry.get_sample_value("kraken_ev1_evictions_total", {"reason": "disk"}) == 5
    assert metrics.registry.get_sample_value("kraken_ev1_store_bytes") == 50 * KiB
    assert evictor.run() == []  # under the mark: nothing more


def test_tti_and_ttl_and_the_filesystem_as_the_base(tmp_path: Path) -> None:
    cas, digests, clock = _store(tmp_path, 4)
    now = clock.seconds()
    os.utime(cas.blob_path(digests[3]), (now, now - 5000))  # read now, stored long ago
    evictor = Evictor(clock, cas, EvictionPolicy(tti=985, ttl=4000), Metrics("ev2"), busy=lambda d: False)
    assert set(evictor.run()) == {digests[0], digests[1], digests[3]}  # idle 1000 s, 990 s; old
    usage = [(95, 100)]
    full = Evictor(clock, cas, EvictionPolicy(high_water=0.9), Metrics("ev3"), busy=lambda d: False,
                   disk_usage=lambda: usage[0])
    assert full.run() == [digests[2]]  # the filesystem never gets below 80 %: the whole store goes
    assert not any(cas.has(d) for d in digests)
