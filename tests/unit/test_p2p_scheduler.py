"""Scheduler + peer protocol wired in memory (iosim): downloads, admission limits, blacklist, idling."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.test.iosim import FakeTransport, connect

from kraken.core.cas import CAStore
from kraken.core.digest import Digest
from kraken.core.metrics import Metrics
from kraken.p2p import conn as conn_module
from kraken.p2p import wire
from kraken.p2p.bitfield import Bitfield
from kraken.p2p.conn import PeerProtocol
from kraken.p2p.metainfo import MetaInfo, generate
from kraken.p2p.peer import PeerHost, PeerInfo
from kraken.p2p.scheduler import Scheduler, SchedulerConfig, TorrentControl
from kraken.p2p.storage import PieceStore

PIECE = 64 * 1024


class Host:
    def __init__(self, root: Path, name: str, mi: MetaInfo, data: bytes | None, **cfg: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.store = PieceStore(CAStore(root / name))
        if data is not None:
            tmp = self.store.cas.temp_path()
            tmp.write_bytes(data)
            self.store.cas.ingest(tmp, mi.digest)
        self.mi = mi
        idle = cfg.pop("idle", False)
        self.scheduler = Scheduler(
            self.reactor, SchedulerConfig(**cfg), seed_source=self.seed,
            committer=self.commit, metrics=Metrics(f"t{name}"),
        )
        if idle:  # requests nothing, so connections stay open and quiet
            self.scheduler.config.dispatch.pipeline_limit = 0

    def seed(self, namespace: str, d: Digest, info_hash: bytes) -> Any:
        return self.store.seed(self.mi) if self.store.cas.has(d) else None

    def commit(self, ctl: Any) -> Any:
        self.store.commit(ctl.torrent)
        return self.store.seed(self.mi)


@pytest.fixture
def blob(tmp_path: Path) -> tuple[MetaInfo, bytes]:
    data = os.urandom(PIECE * 7 + 100)
    path = tmp_path / "src"
    path.write_bytes(data)
    return generate(path, Digest.of_bytes(data), PIECE), data


def dial(leecher: Host, seeder: Host, ctl: Any) -> tuple[PeerProtocol, PeerProtocol, Any]:
    server = PeerProtocol(seeder.scheduler)
    client = PeerProtocol(leecher.scheduler, ctl, seeder.scheduler.peer_id)
    ctl.dialing.add(seeder.scheduler.peer_id)
    pump = connect(server, FakeTransport(server, True), client, FakeTransport(client, False), greet=True)
    return server, client, pump


def handshake_from(conn: PeerProtocol, peer_id: bytes, mi: MetaInfo) -> None:
    """*conn* (the side that dialled) receives the handshake of *peer_id*, which has nothing yet."""
    conn.peer.receive([wire.Handshake(peer_id, mi.info_hash, mi.digest.hex, "ns", Bitfield(mi.num_pieces))])
    assert conn.peer.active


def test_leecher_downloads_from_seeder_in_memory(tmp_path: Path, blob: Any) -> None:
    mi, data = blob
    seeder = Host(tmp_path, "s", mi, data)
    leecher = Host(tmp_path, "l", mi, None)
    ctl = leecher.scheduler.add_torrent(leecher.store.open_download(mi), "ns")
    done = leecher.scheduler.wait(ctl)
    _, _, pump = dial(leecher, seeder, ctl)
    for _ in range(200):
        pump.flush()
        if done.called:
            break
    assert done.called
    assert leecher.store.cas.blob_path(mi.digest).read_bytes() == data


def test_capacity_and_blacklist_refuse_peers(tmp_path: Path, blob: Any) -> None:
    mi, data = blob
    seeder = Host(tmp_path, "s", mi, data, max_open_conn=1)
    a = Host(tmp_path, "a", mi, None, idle=True)
    b = Host(tmp_path, "b", mi, None, idle=True)
    ctl_a = a.scheduler.add_torrent(a.store.open_download(mi), "ns")
    ctl_b = b.scheduler.add_torrent(b.store.open_download(mi), "ns")
    server_a, client_a, pump_a = dial(a, seeder, ctl_a)
    pump_a.flush()
    assert client_a.peer.active and server_a.peer.active
    server_b, client_b, pump_b = dial(b, seeder, ctl_b)
    pump_b.flush()
    assert not client_b.peer.active and server_b.peer.closed, "the seeder is at capacity for this blob"
    assert client_b.peer.closed and not ctl_b.dialing, "a refused dial frees its slot for other peers"
    # A blacklisted peer is refused even with room.
    seeder.scheduler.config.max_open_conn = 10
    seeder.scheduler._blacklist(b.scheduler.peer_id, mi.info_hash, "test")
    server_b, client_b, pump_b = dial(b, seeder, ctl_b)
    pump_b.flush()
    assert not client_b.peer.active
    seeder.reactor.advance(31)
    server_b, client_b, pump_b = dial(b, seeder, ctl_b)
    pump_b.flush()
    assert client_b.peer.active, "the blacklist entry expires after 30 s"


def test_dials_half_the_free_slots_and_replaces_refused_dials(tmp_path: Path, blob: Any) -> None:
    mi, _ = blob
    dials: list[tuple[PeerInfo, PeerProtocol[TorrentControl], Deferred[Any]]] = []

    def dialer(host: PeerHost[TorrentControl], session: TorrentControl, peer: PeerInfo) -> Deferred[Any]:
        dials.append((peer, PeerProtocol(host, session, peer.peer_id), Deferred()))
        return dials[-1][2]

    clock = MemoryReactorClock()
    config = SchedulerConfig(max_open_conn=10, redial_after=10)
    scheduler = Scheduler(clock, config, dialer=dialer)
    ctl = scheduler.add_torrent(PieceStore(CAStore(tmp_path / "a")).open_download(mi), "ns")
    peers = [PeerInfo(bytes([i]) * 20, f"10.0.0.{i}", 16001) for i in range(1, 13)]
    scheduler.connect_peers(ctl, peers)
    assert [p for p, _, _ in dials] == peers[:5], "half the free slots stay open for peers that dial us"
    # Refused during the handshake: the next spare peer is dialled at once.
    dials[0][1].peer.connection_lost()
    assert dials[-1][0] == peers[5] and len(ctl.dialing) == 5
    # The TCP dial fails: replaced too, and the dead peer is shunned.
    dials[1][2].errback(ConnectionRefusedError())
    assert dials[-1][0] == peers[6] and len(ctl.dialing) == 5
    assert scheduler._blacklisted(peers[1].peer_id, ctl.info_hash)
    # The next announce dials half of what is still free (10 - 5 slots, rounded up), skipping
    # the peer that refused us a moment ago.
    scheduler.connect_peers(ctl, peers)
    assert [p for p, _, _ in dials[7:]] == peers[7:10]
    assert len(ctl.dialing) == 8
    clock.advance(10)
    scheduler.connect_peers(ctl, peers)
    assert [p for p, _, _ in dials[10:]] == [peers[0]], "after redial_after it may be dialled again"
    # A connection that ends makes room for the next peer standing by.
    ctl.dialing.discard(peers[2].peer_id)
    ctl.conns[peers[2].peer_id] = SimpleNamespace(peer_id=peers[2].peer_id)  # type: ignore[assignment]
    scheduler.connection_lost(ctl.conns[peers[2].peer_id], ctl, peers[2].peer_id)
    assert dials[-1][0] == peers[10]


def test_mutual_connection_limit(tmp_path: Path, blob: Any) -> None:
    mi, data = blob
    seeder = Host(tmp_path, "s", mi, data, max_mutual_conn=0)
    a, b = Host(tmp_path, "a", mi, None, idle=True), Host(tmp_path, "b", mi, None, idle=True)
    ctl_a = a.scheduler.add_torrent(a.store.open_download(mi), "ns")
    _, client_a, pump = dial(a, seeder, ctl_a)
    pump.flush()
    assert client_a.peer.active
    ctl_b = b.scheduler.add_torrent(b.store.open_download(mi), "ns")
    # b is already connected to a, which the seeder also holds: one mutual neighbour > 0.
    ctl_b.conns[a.scheduler.peer_id] = object()  # type: ignore[assignment]
    _, client_b, pump = dial(b, seeder, ctl_b)
    pump.flush()
    assert not client_b.peer.active


def test_idle_connection_and_leecher_timeout(tmp_path: Path, blob: Any) -> None:
    mi, data = blob
    seeder = Host(tmp_path, "s", mi, data, conn_tti=30, tick_interval=1)
    leecher = Host(tmp_path, "l", mi, None, leecher_tti=60, tick_interval=1, idle=True)
    seeder.scheduler.start()
    leecher.scheduler.start()
    ctl = leecher.scheduler.add_torrent(leecher.store.open_download(mi), "ns")
    failed: list[Any] = []
    leecher.scheduler.wait(ctl).addErrback(failed.append)
    server, _client, pump = dial(leecher, seeder, ctl)
    # Nothing flows (the pump is never flushed again): both sides see an idle connection.
    pump.flush()
    server.transport.loseConnection = lambda: setattr(server, "closed_by_idle", True)  # type: ignore
    for _ in range(31):
        seeder.reactor.advance(1)
    assert getattr(server, "closed_by_idle", False) or server.peer.closed
    for _ in range(61):
        leecher.reactor.advance(1)
    assert failed and "no progress" in str(failed[0].value)
    assert mi.info_hash not in leecher.scheduler.torrents


def test_control_frames_wait_for_a_piece_being_streamed(tmp_path: Path, blob: Any) -> None:
    mi, data = blob
    seeder = Host(tmp_path, "s", mi, data)
    ctl = seeder.scheduler.add_torrent(seeder.store.seed(mi), "ns")
    conn = PeerProtocol(seeder.scheduler, ctl, b"x" * 20)
    transport = StringTransport()
    conn.makeConnection(transport)
    transport.clear()
    conn.peer.send_piece(0)
    conn.pauseProducing()  # as the transport would when its buffer fills
    conn.peer.send_announce(3)
    conn.resumeProducing()
    events = wire.Decoder().feed(transport.value())
    kinds = [type(e).__name__ for e in events if not isinstance(e, wire.PieceChunk)]
    assert kinds == ["PiecePayload", "PieceEnd", "AnnouncePiece"]


class PausingTransport(StringTransport):
    """Pauses its producer after every write, as a transport with a full buffer would."""

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None:
            self.producer.pauseProducing()


def test_cancel_drops_queued_pieces_but_not_the_one_streaming(
    tmp_path: Path, blob: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mi, data = blob
    monkeypatch.setattr(conn_module, "SEND_CHUNK", 16 * 1024)
    seeder = Host(tmp_path, "s", mi, data)
    ctl = seeder.scheduler.add_torrent(seeder.store.seed(mi), "ns")
    conn = PeerProtocol(seeder.scheduler, ctl, b"x" * 20)
    transport = PausingTransport()
    conn.makeConnection(transport)
    handshake_from(conn, b"x" * 20, mi)
    transport.clear()
    conn.resumeProducing()  # the handshake write paused us
    for index in (0, 1, 2):
        conn.peer.send_piece(index)  # piece 0 starts streaming, then the transport pauses us
    for index in (0, 2):
        conn.peer.receive([wire.CancelPiece(index)])
    while conn.peer.sending:
        conn.resumeProducing()
    sent = [e.index for e in wire.Decoder().feed(transport.value()) if isinstance(e, wire.PiecePayload)]
    assert sent == [0, 1], "piece 0 was already streaming; piece 2 was cancelled while queued"


def test_upload_slots_stream_one_piece_at_a_time_over_all_connections(
    tmp_path: Path, blob: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    mi, data = blob
    monkeypatch.setattr(conn_module, "SEND_CHUNK", 16 * 1024)
    seeder = Host(tmp_path, "s", mi, data, upload_slots=1)
    ctl = seeder.scheduler.add_torrent(seeder.store.seed(mi), "ns")
    conns, transports = [], []
    for name in (b"a", b"b", b"c"):
        conn = PeerProtocol(seeder.scheduler, ctl, name * 20)
        transport = PausingTransport()
        conn.makeConnection(transport)
        handshake_from(conn, name * 20, mi)
        transport.clear()
        conn.resumeProducing()
        conns.append(conn)
        transports.append(transport)
    a, b, c = conns
    a.peer.send_piece(0)
    b.peer.send_piece(1)
    c.peer.send_piece(2)
    assert transports[0].value() and not transports[1].value() and not transports[2].value()
    c.peer.close("gone")  # leaving the queue frees nothing and starts nobody
    while a.peer.sending:
        a.resumeProducing()
    assert transports[1].value(), "b starts when a's piece is out"
    while b.peer.sending:
        b.resumeProducing()
    events = wire.Decoder().feed(transports[1].value())
    assert [e.index for e in events if isinstance(e, wire.PiecePayload)] == [1]
    assert not seeder.scheduler.uploads.holders and not seeder.scheduler.uploads.waiting


def test_a_complete_blob_is_announced_again_while_it_is_seeded(tmp_path: Path, blob: Any) -> None:
    mi, data = blob
    seeder = Host(tmp_path, "s", mi, data, seeder_announce_interval=10.0, seeder_tti=100.0)
    announced: list[bool] = []

    def announce(ctl: TorrentControl, complete: bool) -> Deferred[Any]:
        announced.append(complete)
        d: Deferred[Any] = Deferred()
        d.callback(([], 60.0))
        return d

    seeder.scheduler.announcer = announce
    seeder.scheduler.start()
    ctl = seeder.scheduler.add_torrent(seeder.store.seed(mi), "ns")
    assert ctl.finished and announced == []  # a complete blob announces on the next seeding tick
    seeder.reactor.pump([1.0] * 10)
    assert announced == [True]  # the peer store may have lost it (a Redis restart): it says so again
    seeder.reactor.pump([1.0] * 10)
    assert announced == [True, True]
    seeder.reactor.pump([1.0] * 100)  # nobody read it for seeder_tti: dropped, no more announces
    assert len(announced) <= 11 and ctl.info_hash not in seeder.scheduler.torrents
