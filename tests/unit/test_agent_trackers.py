"""The agent's trackers: each blob asks its own tracker (rendezvous), the next one when it fails,
a failing tracker last for a while; trackers wired in memory with treq's StubTreq."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Request

from kraken.agent.tracker_client import TrackerClient
from kraken.core.digest import Digest
from kraken.core.httpclient import HTTPStatusError
from kraken.p2p.metainfo import generate

DATA = b"tracked" * 1000
D = Digest.of_bytes(DATA)


class Trackers(Resource):
    """Every tracker host: metainfo of D, or 500 from the hosts in ``down``."""

    isLeaf = True

    def __init__(self, metainfo: bytes) -> None:
        super().__init__()
        self.metainfo = metainfo
        self.down: set[str] = set()
        self.asked: list[str] = []

    def render_GET(self, request: Request) -> bytes:
        host = request.getRequestHostname().decode()
        self.asked.append(host)
        if host in self.down:
            request.setResponseCode(500)
            return b'{"error": {"code": "INTERNAL", "message": "down"}}'
        return self.metainfo


@pytest.fixture
def trackers(tmp_path: Path) -> Trackers:
    blob = tmp_path / "blob"
    blob.write_bytes(DATA)
    return Trackers(generate(blob, D, 1024).to_json())


@pytest_twisted.inlineCallbacks
def test_a_blob_asks_its_tracker_then_the_next_and_a_failing_one_goes_last(trackers: Trackers) -> Any:
    clock = Clock()
    client = TrackerClient(clock, ["t1:1", "t2:2", "t3:3"], None, StubTreq(trackers),  # type: ignore[arg-type]
                           unavailable_timeout=0)
    order = [base.split("//")[1].split(":")[0] for base in client.trackers_for(D)]
    mi = yield client.metainfo("ns", D)
    assert mi.digest == D and trackers.asked == order[:1], "every agent asks the blob's own tracker"
    trackers.down.add(order[0])
    mi = yield client.metainfo("ns", D)
    assert mi.digest == D and trackers.asked[1:] == order[:2], "its next tracker answers"
    mi = yield client.metainfo("ns", D)
    assert trackers.asked[3:] == [order[1]], "the failing tracker is asked last for a while"
    clock.advance(11)
    trackers.down = set(order)
    with pytest.raises(HTTPStatusError):
        yield client.metainfo("ns", D)  # none answers and no wait is allowed: the last failure
    assert trackers.asked[4:] == order


@pytest_twisted.inlineCallbacks
def test_a_new_tracker_list_takes_effect_at_once(trackers: Trackers) -> Any:
    client = TrackerClient(Clock(), "t1:1", None, StubTreq(trackers))  # type: ignore[arg-type]
    yield client.metainfo("ns", D)
    client.set_trackers(["t9:9"])
    yield client.metainfo("ns", D)
    assert trackers.asked == ["t1", "t9"]
    with pytest.raises(ValueError):
        client.set_trackers([])
