"""Peer connections over real mutual TLS on loopback: refused and finished connections really close."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from kraken.core.cas import CAStore
from kraken.core.digest import Digest
from kraken.core.endpoints import server_endpoint
from kraken.core.metrics import Metrics
from kraken.p2p.conn import PeerDialer, PeerFactory
from kraken.p2p.dispatch import DispatchConfig
from kraken.p2p.metainfo import MetaInfo, generate
from kraken.p2p.peer import PeerInfo
from kraken.p2p.scheduler import Scheduler, SchedulerConfig
from kraken.p2p.storage import PieceStore
from tests.support import tls_settings

PIECE = 64 * 1024


def host(root: Path, pki: Path, role: str, name: str, **cfg: Any) -> tuple[Scheduler, PieceStore]:
    store = PieceStore(CAStore(root / name))

    def commit(ctl: Any) -> Any:
        store.commit(ctl.torrent)
        return store.seed(ctl.torrent.mi)

    dialer = PeerDialer(reactor, tls_settings(pki, role))
    scheduler = Scheduler(reactor, SchedulerConfig(**cfg), dialer, committer=commit, metrics=Metrics(name))
    return scheduler, store


async def until(condition: Any, seconds: float = 10.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        await deferLater(reactor, 0.05, lambda: None)
    return condition()


@pytest_twisted.ensureDeferred
async def test_refused_and_finished_connections_close(tmp_path: Path, pki: Path) -> None:
    data = os.urandom(PIECE * 4)
    (tmp_path / "src").write_bytes(data)
    mi: MetaInfo = generate(tmp_path / "src", Digest.of_bytes(data), PIECE)
    seeder, seed_store = host(tmp_path, pki, "origin", "seeder", max_open_conn=1)
    tmp = seed_store.cas.temp_path()
    tmp.write_bytes(data)
    seed_store.cas.ingest(tmp, mi.digest)
    seed_ctl = seeder.add_torrent(seed_store.seed(mi), "ns")
    endpoint, factory = server_endpoint(
        reactor, "tls:tcp:0:interface=127.0.0.1", PeerFactory(seeder), tls_settings(pki, "origin"), {"agent"}
    )
    port = await endpoint.listen(factory)
    try:
        target = [PeerInfo(seeder.peer_id, "127.0.0.1", port.getHost().port, origin=True, complete=True)]
        a, a_store = host(tmp_path, pki, "agent", "a", redial_after=0)
        b, b_store = host(tmp_path, pki, "agent", "b", dispatch=DispatchConfig(origin_pipeline_limit=0))
        ctl_b = b.add_torrent(b_store.open_download(mi), "ns")
        b.connect_peers(ctl_b, target)
        assert await until(lambda: bool(ctl_b.conns)), "b holds the seeder's only slot"
        ctl_a = a.add_torrent(a_store.open_download(mi), "ns")
        a.connect_peers(ctl_a, target)
        assert await until(lambda: not ctl_a.dialing), "a refused dial frees its slot at once"
        assert not ctl_a.conns
        # b lets go (as after its download): the seeder's slot frees and a gets the blob.
        next(iter(ctl_b.conns.values())).close("test")
        assert await until(lambda: not seed_ctl.conns), "the seeder sees the connection end"
        done = a.wait(ctl_a)
        a.connect_peers(ctl_a, target)
        await done
        assert a_store.cas.blob_path(mi.digest).read_bytes() == data
        assert await until(lambda: not seed_ctl.conns and not ctl_a.conns), "both sides complete: closed"
    finally:
        await port.stopListening()

