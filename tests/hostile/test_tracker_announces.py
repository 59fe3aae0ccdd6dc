"""Hostile announces against a real kraken-tracker: announcing another address, filling the peer
store with random info hashes or fake peers. Each is refused with a clear error, counted in
/metrics and logged once per offender."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from kraken.core.digest import Digest
from kraken.p2p.metainfo import MetaInfo
from tests.hostile.rig import call
from tests.integration.p2p_fixtures import origin_config, tracker_config
from tests.support import ServerProcess, tls_section

DIGEST = "sha256:" + "cd" * 32


def announce(
    pki: Path, port: int, info_hash: str, ip: str = "127.0.0.1", role: str = "agent"
) -> tuple[int, Any]:
    body = {
        "digest": DIGEST,
        "namespace": "ns",
        "peer": {"peer_id": secrets.token_hex(20), "ip": ip, "port": 7000, "complete": True},
    }
    return call(pki, port, "POST", f"/announce/{info_hash}", json.dumps(body).encode(), role=role)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_announces_are_bound_to_their_address_and_capped(pki: Path, servers: ServerProcess.Pool) -> None:
    config = {
        "listen": ["tls:tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "tracker"),
        "tracker": {
            "origins": [],
            "max_peers_per_blob": 20,
            "max_blobs_per_peer": 50,
            "trusted_roles": ["origin"],
        },
    }
    tracker = servers.start("kraken-tracker", config, name="tracker")
    port = tracker.port()

    status, body = announce(pki, port, "ab" * 32, ip="10.9.9.9")
    assert status == 403 and body["error"]["code"] == "ADDRESS_MISMATCH", body
    status, body = announce(pki, port, "ab" * 32, ip="10.9.9.9", role="origin")  # a trusted role
    assert status == 200, body

    swarm = [announce(pki, port, "ab" * 32) for _ in range(25)]  # fake peers for one blob
    assert [s for s, _ in swarm].count(200) == 19  # 20 with the origin's
    assert all(b["error"]["code"] == "TOO_MANY_PEERS" for s, b in swarm if s != 200)

    spam = [announce(pki, port, secrets.token_hex(32)) for _ in range(60)]  # random blobs
    assert [s for s, _ in spam].count(200) == 50 - 19
    assert all(s == 429 and b["error"]["code"] == "TOO_MANY_BLOBS" for s, b in spam if s != 200)

    _, metrics = call(pki, port, "GET", "/metrics", role="agent")
    assert metric(metrics, "kraken_tracker_peers") == 51
    assert metric(metrics, 'kraken_tracker_announces_refused_total{reason="address"}') == 1
    assert metric(metrics, 'kraken_tracker_announces_refused_total{reason="peers_per_blob"}') == 6
    assert metric(metrics, 'kraken_tracker_announces_refused_total{reason="blobs_per_peer"}') == 60 - 31
    log = tracker.log()
    for reason in ("address", "peers_per_blob", "blobs_per_peer"):
        assert log.count(f"refusing announces from 127.0.0.1 ({reason})") == 1, reason


def test_info_hashes_are_checked_against_the_origins_metainfo(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    backend = tmp_path / "backend"
    backend.mkdir()
    data = os.urandom(300_000)
    d = Digest.of_bytes(data)
    (backend / d.hex).write_bytes(data)
    origin = servers.start("kraken-origin", origin_config(pki, tmp_path / "o", backend), name="origin")
    tracker = servers.start("kraken-tracker", tracker_config(pki, origin.port("http")), name="tracker")
    port = tracker.port()

    def announce_for(digest: str, info_hash: str) -> tuple[int, Any]:
        body = {
            "digest": digest,
            "namespace": "ns",
            "peer": {"peer_id": secrets.token_hex(20), "ip": "127.0.0.1", "port": 7000, "complete": True},
        }
        return call(pki, port, "POST", f"/announce/{info_hash}", json.dumps(body).encode(), role="agent")

    deadline = time.monotonic() + 20
    while (answer := call(pki, port, "GET", f"/namespace/ns/blobs/{d}/metainfo", role="agent"))[0] == 202:
        assert time.monotonic() < deadline, answer
        time.sleep(0.05)
    assert answer[0] == 200, answer
    real = MetaInfo.from_dict(answer[1]).info_hash_hex

    status, body = announce_for(str(d), secrets.token_hex(32))
    assert status == 400 and body["error"]["code"] == "INFO_HASH_MISMATCH", body
    assert announce_for(str(d), real)[0] == 200

    unknown = Digest.of_bytes(b"no such blob")
    answers = [announce_for(str(unknown), secrets.token_hex(32)) for _ in range(40)]
    codes = {status for status, _ in answers}
    assert 404 in codes and codes <= {200, 404}, answers  # 200 only while the origin still looks
    assert all(b["error"]["code"] == "BLOB_UNKNOWN" for s, b in answers if s == 404)
    _, metrics = call(pki, port, "GET", "/metrics", role="agent")
    assert metric(metrics, 'kraken_tracker_announces_refused_total{reason="info_hash"}') == 1
    assert metric(metrics, 'kraken_tracker_announces_refused_total{reason="unknown_blob"}') >= 1
