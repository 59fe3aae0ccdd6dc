"""Hostile announces with a Clock: the announced address is bound to the client's, info hashes
are checked against the blob's metainfo, the peer store is capped, refusals are counted and logged
once per offender."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, globalLogPublisher

from kraken.core.digest import Digest
from kraken.core.http import HTTPError
from kraken.core.metrics import Metrics
from kraken.p2p.metainfo import MetaInfo
from kraken.tracker.peerstore import BLOBS_PER_PEER, PEERS_PER_BLOB, PeerLimit, PeerRecord, PeerStore
from kraken.tracker.server import TrackerAPI, parse_networks
from tests.unit.test_p2p_tracker import DIGEST, INFO, Tracker, announce_body
from tests.unit.test_p2p_tracker import request as plain_request

METAINFO = MetaInfo(Digest.parse(DIGEST), 10, 4, (b"\1" * 32, b"\2" * 32, b"\3" * 32))


def refused(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(metrics.prefix + "announces_refused_total", {"reason": reason})
    return value or 0.0


@pytest.fixture
def warnings() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        if event.get("log_namespace") == "kraken.tracker" and "refusing" in event.get("log_format", ""):
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def request(body: Any, source: str = "10.0.0.1") -> Any:
    r = plain_request(body, source)
    r.transport = StringTransport()  # no certificate, so no trusted role
    return r


def record(n: int, ip: str = "10.0.0.1") -> PeerRecord:
    return PeerRecord(f"{n:040x}", ip, 1000 + n)


def test_store_caps_peers_per_blob_but_lets_known_peers_refresh() -> None:
    clock = Clock()
    store = PeerStore(clock, ttl=10, max_peers_per_blob=3)
    for n in range(3):
        store.update(INFO, record(n, f"10.0.0.{n}"))
    with pytest.raises(PeerLimit) as e:
        store.update(INFO, record(9, "10.0.0.9"))
    assert e.value.reason == PEERS_PER_BLOB and "3 peers" in str(e.value)
    store.update(INFO, record(1, "10.0.0.1"))  # a refresh is never refused
    store.update("cd" * 32, record(9, "10.0.0.9"))  # another blob has room
    clock.advance(11)
    store.update(INFO, record(9, "10.0.0.9"))  # the expired ones make room at once
    assert len(store.sample(INFO, 50)) == 1


def test_store_caps_records_per_address() -> None:
    clock = Clock()
    store = PeerStore(clock, ttl=10, max_blobs_per_peer=2)
    store.update("01" * 32, record(1))
    store.update("02" * 32, record(1))
    with pytest.raises(PeerLimit) as e:
        store.update("03" * 32, record(1))
    assert e.value.reason == BLOBS_PER_PEER and "10.0.0.1" in str(e.value)
    store.update("03" * 32, record(2, "10.0.0.2"))  # another address has room
    store.update("01" * 32, record(1))  # a refresh is never refused
    store.update("01" * 32, record(1, "10.0.0.3"))  # a peer that moved frees its old address
    store.update("03" * 32, record(1))
    assert store.blobs_at("10.0.0.1") == 2 and store.blobs_at("10.0.0.3") == 1
    assert len(store) == 4 and len(store.sample("03" * 32, 50)) == 2
    clock.advance(11)
    assert store.purge() == 4 and store.blobs_at("10.0.0.1") == 0 and len(store) == 0


def api(**kwargs: Any) -> tuple[TrackerAPI, Metrics]:
    clock = Clock()
    metrics = Metrics("tracker_limits")
    store = kwargs.pop("store", None)
    if store is None:
        store = PeerStore(clock)
    return Tracker(clock, store, None, metrics, **kwargs), metrics


@pytest_twisted.inlineCallbacks
def test_an_announce_for_another_address_is_refused_counted_and_logged_once(warnings: list[LogEvent]) -> Any:
    tracker, metrics = api()
    for _ in range(3):
        with pytest.raises(HTTPError) as e:
            yield tracker.announce(request(announce_body(1), source="10.6.6.6"), INFO)
        assert e.value.status == 403 and e.value.code == "ADDRESS_MISMATCH" and "10.6.6.6" in e.value.message
    assert refused(metrics, "address") == 3 and len(warnings) == 1
    assert len(tracker.store) == 0
    yield tracker.announce(request(announce_body(1, complete=True)), INFO)  # its own address is fine
    body = announce_body(2, complete=True)
    body["peer"]["ip"] = "10.0.0.2"
    yield tracker.announce(request(body, source="::ffff:10.0.0.2"), INFO)  # an IPv4-mapped source
    assert len(tracker.store) == 2


@pytest_twisted.inlineCallbacks
def test_trusted_networks_may_announce_for_others() -> Any:
    tracker, _ = api(trusted_networks=parse_networks(["192.168.0.0/16", "172.16.0.1"]))
    for source in ("192.168.7.7", "172.16.0.1"):
        yield tracker.announce(request(announce_body(1, complete=True), source=source), INFO)
    with pytest.raises(HTTPError):
        yield tracker.announce(request(announce_body(1, complete=True), source="172.16.0.2"), INFO)
    with pytest.raises(ValueError, match="trusted_networks"):
        parse_networks(["not-a-net"])


@pytest_twisted.inlineCallbacks
def test_info_hash_must_match_the_blobs_metainfo(warnings: list[LogEvent]) -> Any:
    tracker, metrics = api()
    tracker.info_hash_cache.put(METAINFO.digest.hex, METAINFO.info_hash_hex, 300)
    with pytest.raises(HTTPError) as e:
        yield tracker.announce(request(announce_body(1, complete=True)), INFO)
    assert e.value.status == 400 and e.value.code == "INFO_HASH_MISMATCH"
    yield tracker.announce(request(announce_body(1, complete=True)), METAINFO.info_hash_hex)
    with pytest.raises(HTTPError) as e:
        yield tracker.announce(request(announce_body(1)), "AB" * 32)
    assert e.value.code == "BAD_INFO_HASH"
    assert refused(metrics, "info_hash") == 2 and len(warnings) == 1  # one offender, one reason


class FetchingTracker(Tracker):
    status = 200

    def _fetch_metainfo(self, namespace: str, d: Any) -> Any:
        if self.status == 200:
            self.info_hash_cache.put(d.hex, METAINFO.info_hash_hex, 300)
        return succeed((self.status, METAINFO.to_json()))


@pytest_twisted.inlineCallbacks
def test_the_metainfo_is_fetched_to_check_and_unknown_blobs_are_refused() -> Any:
    clock = Clock()
    metrics = Metrics("tracker_fetch")
    tracker = FetchingTracker(clock, PeerStore(clock), None, metrics)
    tracker.origins = object()  # type: ignore[assignment]
    yield tracker.announce(request(announce_body(1, complete=True)), METAINFO.info_hash_hex)
    with pytest.raises(HTTPError) as e:
        yield tracker.announce(request(announce_body(1, complete=True)), INFO)
    assert e.value.code == "INFO_HASH_MISMATCH"
    tracker.info_hash_cache.items.clear()
    tracker.status = 404
    with pytest.raises(HTTPError) as e:
        yield tracker.announce(request(announce_body(1, complete=True)), INFO)
    assert e.value.status == 404 and e.value.code == "BLOB_UNKNOWN"
    tracker.status = 202  # the origins are still fetching it: cannot tell, so accepted
    yield tracker.announce(request(announce_body(2, complete=True)), INFO)
    assert refused(metrics, "unknown_blob") == 1


@pytest_twisted.inlineCallbacks
def test_caps_answer_429_and_count(warnings: list[LogEvent]) -> Any:
    clock = Clock()
    tracker, metrics = api(store=PeerStore(clock, max_peers_per_blob=2, max_blobs_per_peer=3))
    for n in range(2):
        body = announce_body(n, complete=True)
        body["peer"]["ip"] = f"10.0.1.{n}"
        yield tracker.announce(request(body, source=f"10.0.1.{n}"), INFO)
    body = announce_body(5, complete=True)
    with pytest.raises(HTTPError) as e:
        yield tracker.announce(request(body), INFO)
    assert e.value.status == 429 and e.value.code == "TOO_MANY_PEERS"
    for i in range(3):
        yield tracker.announce(request(body), f"{i:064x}")
    for i in range(3, 6):
        with pytest.raises(HTTPError) as e:
            yield tracker.announce(request(body), f"{i:064x}")
        assert e.value.status == 429 and e.value.code == "TOO_MANY_BLOBS"
    assert refused(metrics, PEERS_PER_BLOB) == 1 and refused(metrics, BLOBS_PER_PEER) == 3
    assert len(warnings) == 2 and len(tracker.store) == 5
