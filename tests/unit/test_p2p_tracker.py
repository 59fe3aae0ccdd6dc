"""Tracker logic with a Clock: peer store TTL, announce handout order, bad announces."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from kraken.core.http import HTTPError
from kraken.core.metrics import Metrics
from kraken.tracker.peerstore import PeerRecord, PeerStore
from kraken.tracker.server import TrackerAPI

INFO = "ab" * 32
DIGEST = "sha256:" + "cd" * 32


def peer(n: int, complete: bool = False) -> PeerRecord:
    return PeerRecord(f"{n:040x}", "10.0.0.1", 1000 + n, complete)


def test_peer_store_expires_entries() -> None:
    clock = Clock()
    store = PeerStore(clock, ttl=10)
    store.update(INFO, peer(1))
    clock.advance(5)
    store.update(INFO, peer(2))
    clock.advance(6)
    assert [p.peer_id for p in store.sample(INFO, 50)] == [peer(2).peer_id]
    assert store.purge() == 1 and len(store) == 1


class Tracker(TrackerAPI):
    def _origin_peers(self, d: Any) -> Any:
        return succeed([PeerRecord("ee" * 20, "10.0.0.9", 9, True, True)])


def announce_body(n: int, complete: bool = False) -> dict[str, Any]:
    p = peer(n, complete)
    return {"digest": DIGEST, "namespace": "ns",
            "peer": {"peer_id": p.peer_id, "ip": p.ip, "port": p.port, "complete": complete}}


def request(body: Any, source: str = "10.0.0.1") -> DummyRequest:
    r = DummyRequest([b""])
    r.client = IPv4Address("TCP", source, 40000)  # the announces above come from their own address
    r.content = io.BytesIO(json.dumps(body).encode() if not isinstance(body, bytes) else body)
    return r


@pytest_twisted.inlineCallbacks
def test_handout_orders_complete_agents_then_origins_then_the_rest() -> Any:
    clock = Clock()
    api = Tracker(clock, PeerStore(clock), None, Metrics("tracker_test"), announce_interval=2.5)
    api.origins = object()  # type: ignore[assignment]
    yield api.announce(request(announce_body(1)), INFO)
    yield api.announce(request(announce_body(2, complete=True)), INFO)
    result = yield api.announce(request(announce_body(3)), INFO)
    kinds = [(p["origin"], p["complete"]) for p in result["peers"]]
    assert kinds == [(False, True), (True, True), (False, False)]
    assert peer(3).peer_id not in [p["peer_id"] for p in result["peers"]], "not handed itself"
    assert result["interval"] == 2.5
    done = yield api.announce(request(announce_body(4, complete=True)), INFO)
    assert done["peers"] is None


@pytest.mark.parametrize(
    ("body", "info_hash", "needle"),
    [
        ({"digest": DIGEST}, INFO, "needs digest and peer"),
        ({**announce_body(1), "digest": "sha256:zz"}, INFO, "64 lowercase hex"),
        (b"not json", INFO, "not valid JSON"),
        (announce_body(1), "xyz", "info hash must be 64"),
        ({**announce_body(1), "peer": {"peer_id": "short", "ip": "x", "port": 1, "complete": False}}, INFO,
         "peer_id must be 40 hex"),
    ],
)
@pytest_twisted.inlineCallbacks
def test_bad_announces_are_400(body: Any, info_hash: str, needle: str) -> Any:
    clock = Clock()
    api = Tracker(clock, PeerStore(clock), None, Metrics("tracker_bad"))
    with pytest.raises(HTTPError) as e:
        yield api.announce(request(body), info_hash)
    assert e.value.status == 400 and needle in e.value.message
