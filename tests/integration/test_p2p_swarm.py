"""Tracker, origin and agents as real twistd processes: a swarm downloads one blob."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.defer import DeferredList

from kraken.core.digest import Digest
from kraken.p2p.origins import OriginClient
from tests.integration.p2p_fixtures import agent_config, client, metric, origin_config, tracker_config
from tests.support import tls_settings

NS = "test%2Fswarm"


def start_cluster(
    servers: Any, pki: Path, tmp_path: Path, backend: Path | None = None, origin_egress: int = 0
) -> tuple[Any, Any]:
    config = origin_config(pki, tmp_path / "origin", backend)
    config["bandwidth"] = {"egress_bits_per_sec": origin_egress}
    origin = servers.start("kraken-origin", config, name="origin")
    tracker = servers.start("kraken-tracker", tracker_config(pki, origin.port("http")), name="tracker")
    return origin, tracker


def start_agent(servers: Any, pki: Path, tmp_path: Path, tracker: Any, name: str, **extra: Any) -> Any:
    config = agent_config(pki, tmp_path / name, tracker.port("http"), **extra)
    return servers.start("kraken-agent", config, name=name)


@pytest_twisted.inlineCallbacks
def upload(pki: Path, origin: Any, data: bytes, tmp_path: Path, ns: str = "test/swarm") -> Any:
    from twisted.internet import reactor

    d = Digest.of_bytes(data)
    src = tmp_path / f"upload-{d.hex[:8]}"
    src.write_bytes(data)
    address = f"127.0.0.1:{origin.port('http')}"
    yield OriginClient(reactor, address, tls_settings(pki, "client")).upload(ns, d, str(src))
    return d


def blob_url(agent: Any, d: Digest) -> str:
    return f"http://127.0.0.1:{agent.port('http')}/namespace/{NS}/blobs/{d}"


@pytest_twisted.inlineCallbacks
def test_five_agents_download_concurrently_mostly_from_each_other(
    servers: Any, pki: Path, tmp_path: Path
) -> Any:
    # The origin's upload is capped at 80 Mbit/s (about one copy every 2 s), as an origin
    # serving a whole cluster would be; on loopback the agents are not.
    origin, tracker = start_cluster(servers, pki, tmp_path, origin_egress=80_000_000)
    agents = [start_agent(servers, pki, tmp_path, tracker, f"a{i}") for i in range(5)]
    data = os.urandom(20 * 1024 * 1024)
    d = yield upload(pki, origin, data, tmp_path)
    started = time.monotonic()
    results = yield DeferredList([client(pki).get(blob_url(a, d)) for a in agents], consumeErrors=True)
    bodies = []
    for ok, response in results:
        assert ok, response
        assert response.code == 200
        bodies.append((yield response.content()))
    elapsed = time.monotonic() - started
    assert all(b == data for b in bodies), "every agent must get the exact bytes"
    http = client(pki)
    from_origin = from_agents = sendfile_bodies = 0.0
    for a in agents:
        url = f"http://127.0.0.1:{a.port('http')}/metrics"
        from_origin += yield metric(http, url, 'kraken_agent_pieces_received_total{from_role="origin"}')
        from_agents += yield metric(http, url, 'kraken_agent_pieces_received_total{from_role="agent"}')
        sendfile_bodies += yield metric(http, url, 'kraken_agent_blob_bodies_total{how="sendfile"}')
    assert sendfile_bodies == 5, "whole-blob GETs on plain TCP go out with sendfile"
    origin_metrics = f"https://127.0.0.1:{origin.port('http')}/metrics"
    sent_by_origin = yield metric(http, origin_metrics, "kraken_origin_pieces_sent_total")
    print(f"5 x 20 MiB: {elapsed:.2f}s; pieces from origin {from_origin:.0f}, from agents {from_agents:.0f}")
    assert from_origin + from_agents >= 5 * 20
    assert sent_by_origin >= from_origin  # endgame duplicates are sent but discarded
    assert from_agents > from_origin, "most pieces must come from other agents"
