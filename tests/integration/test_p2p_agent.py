"""Agent behaviour against real processes: 404, backend-only blobs, a corrupt peer, resume after kill."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import protocol, reactor

from kraken.core.digest import Digest
from kraken.core.tls import wrap_server_factory
from kraken.p2p import wire
from kraken.p2p.bitfield import Bitfield
from kraken.p2p.metainfo import MetaInfo
from tests.integration.p2p_fixtures import client, metric, sleep
from tests.integration.test_p2p_swarm import blob_url, start_agent, start_cluster, upload
from tests.support import tls_settings


@pytest_twisted.inlineCallbacks
def test_unknown_blob_is_404_and_backend_only_blob_downloads(servers: Any, pki: Path, tmp_path: Path) -> Any:
    backend = tmp_path / "backend"
    backend.mkdir()
    data = os.urandom(3 * 1024 * 1024 + 5)
    d = Digest.of_bytes(data)
    (backend / d.hex).write_bytes(data)
    _origin, tracker = start_cluster(servers, pki, tmp_path, backend)
    agent = start_agent(servers, pki, tmp_path, tracker, "a0")
    http = client(pki)
    r = yield http.get(blob_url(agent, Digest.of_bytes(b"nobody has this")))
    assert r.code == 404 and (yield r.json())["error"]["code"] == "BLOB_UNKNOWN"
    r = yield http.get(blob_url(agent, d))
    assert r.code == 200 and (yield r.content()) == data
    r = yield http.get(f"http://127.0.0.1:{agent.port('http')}/namespace/x/blobs/sha256:nothex")
    assert r.code == 400
    yield r.content()
    r = yield http.delete(f"http://127.0.0.1:{agent.port('http')}/blobs/{d.hex}")
    assert (yield r.json()) == {"deleted": True}


class EvilPeer(protocol.Protocol):
    """Claims every piece of the blob and serves zeros instead."""

    def connectionMade(self) -> None:
        self.decoder = wire.Decoder()

    def dataReceived(self, data: bytes) -> None:
        mi: MetaInfo = self.factory.mi
        for event in self.decoder.feed(data):
            if isinstance(event, wire.Handshake):
                self.transport.write(
                    wire.encode_handshake(
                        wire.Handshake(self.factory.peer_id, mi.info_hash, mi.digest.hex, "",
                                       Bitfield.full(mi.num_pieces))
                    )
                )
            elif isinstance(event, wire.PieceRequest):
                size = mi.piece_size(event.index)
                self.factory.served += 1
                self.transport.write(wire.encode_payload_header(event.index, size) + b"\0" * size)


@pytest_twisted.inlineCallbacks
def test_corrupt_peer_is_blacklisted_and_download_is_correct(servers: Any, pki: Path, tmp_path: Path) -> Any:
    origin, tracker = start_cluster(servers, pki, tmp_path)
    data = os.urandom(6 * 1024 * 1024)
    d = yield upload(pki, origin, data, tmp_path)
    http = client(pki, "agent")
    r = yield http.get(f"https://127.0.0.1:{origin.port('http')}/namespace/test%2Fswarm/blobs/{d}/metainfo")
    mi = MetaInfo.from_json((yield r.content()))

    factory = protocol.Factory.forProtocol(EvilPeer)
    factory.mi, factory.peer_id, factory.served = mi, os.urandom(20), 0
    port = reactor.listenTCP(0, wrap_server_factory(factory, tls_settings(pki, "agent"), {"agent", "origin"}),
                             interface="127.0.0.1")
    try:
        # It announces itself as a complete peer, so the tracker hands it out first.
        r = yield http.post(
            f"https://127.0.0.1:{tracker.port('http')}/announce/{mi.info_hash_hex}",
            json={"digest": str(d), "namespace": "test/swarm",
                  "peer": {"peer_id": factory.peer_id.hex(), "ip": "127.0.0.1",
                           "port": port.getHost().port, "complete": True}},
        )
        assert r.code == 200
        yield r.content()
        # One connection: the agent asks the corrupt peer alone (the origin would otherwise race
        # it), then the origin from the same announce once the corrupt peer is dropped.
        agent = start_agent(servers, pki, tmp_path, tracker, "a0", scheduler={"max_open_conn": 1})
        r = yield client(pki).get(blob_url(agent, d))
        assert r.code == 200 and (yield r.content()) == data
        assert factory.served >= 1, "the agent must have tried the corrupt peer"
        # The blacklist is cleared once the blob is complete; the log and metrics keep the record.
        assert f"blacklisting peer {factory.peer_id.hex()[:12]}" in agent.log()
        metrics = f"http://127.0.0.1:{agent.port('http')}/metrics"
        corrupt = yield metric(client(pki), metrics, "kraken_agent_pieces_corrupt_total")
        listed = yield metric(client(pki), metrics, 'kraken_agent_peers_blacklisted_total{reason="corrupt"}')
        assert corrupt >= 1 and listed >= 1
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_killed_agent_resumes_from_pieces_on_disk(servers: Any, pki: Path, tmp_path: Path) -> Any:
    origin, tracker = start_cluster(servers, pki, tmp_path)
    data = os.urandom(16 * 1024 * 1024)
    d = yield upload(pki, origin, data, tmp_path)
    # 40 Mbit/s in: the 16 MiB download takes over 3 s, so a kill lands mid-way.
    agent = start_agent(servers, pki, tmp_path, tracker, "a0", bandwidth={"ingress_bits_per_sec": 40_000_000})
    request = client(pki).get(blob_url(agent, d))
    request.addErrback(lambda f: None)
    status = tmp_path / "a0" / "store" / "download" / d.hex / "status"
    for _ in range(100):
        if status.exists() and 3 <= status.read_bytes().count(1) <= 12:
            break
        yield sleep(0.05)
    agent.kill()
    had = status.read_bytes().count(1)
    assert 3 <= had < 16, had
    agent.start()
    r = yield client(pki).get(blob_url(agent, d))
    assert r.code == 200 and (yield r.content()) == data
    fetched = yield metric(client(pki), f"http://127.0.0.1:{agent.port('http')}/metrics",
                           "kraken_agent_pieces_received_total")
    assert fetched <= 16 - had, f"only the missing pieces are fetched after the restart ({fetched}, {had})"
    assert "resuming" in agent.log()


def run_cli(*args: str) -> Any:
    import subprocess
    import sys

    from tests.support import REPO, _env

    return subprocess.run(
        [sys.executable, "-m", "kraken.cli.main", "blob", *args], capture_output=True, text=True,
        cwd=REPO, env=_env(), timeout=60,
    )


@pytest_twisted.inlineCallbacks
def test_cli_push_and_pull(servers: Any, pki: Path, tmp_path: Path) -> Any:
    from twisted.internet.threads import deferToThread

    origin, tracker = start_cluster(servers, pki, tmp_path)
    agent = start_agent(servers, pki, tmp_path, tracker, "a0")
    data = os.urandom(1_500_000)
    src = tmp_path / "file.bin"
    src.write_bytes(data)
    pushed = yield deferToThread(
        run_cli, "push", str(src), "--origin", f"127.0.0.1:{origin.port('http')}", "--pki", str(pki)
    )
    assert pushed.returncode == 0, pushed.stderr
    digest = pushed.stdout.strip()
    assert digest == str(Digest.of_bytes(data))
    out = tmp_path / "out.bin"
    pulled = yield deferToThread(
        run_cli, "pull", digest, "-o", str(out), "--agent", f"127.0.0.1:{agent.port('http')}"
    )
    assert pulled.returncode == 0, pulled.stderr
    assert out.read_bytes() == data
    missing = yield deferToThread(
        run_cli, "pull", "sha256:" + "0" * 64, "-o", str(out), "--agent", f"127.0.0.1:{agent.port('http')}"
    )
    assert missing.returncode == 1 and "404" in missing.stderr
    bad = yield deferToThread(run_cli, "pull", "nonsense")
    assert bad.returncode == 2 and "sha256" in bad.stderr
