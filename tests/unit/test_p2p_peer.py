"""The peer connection's state machine alone: a Clock, a recording host and a recording transport."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from kraken.core.cas import CAStore
from kraken.core.digest import Digest
from kraken.p2p import wire
from kraken.p2p.bitfield import Bitfield
from kraken.p2p.metainfo import MetaInfo, generate
from kraken.p2p.peer import PeerConnection, PeerLink, State
from kraken.p2p.scheduler import SchedulerConfig
from kraken.p2p.storage import PieceStore, Torrent
from kraken.p2p.uploads import UploadSlots

PIECE = 1024
US, THEM = b"u" * 20, b"t" * 20


class Exchange:
    """Records what the connection tells the blob's dispatcher."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_progress(self, peer_id: bytes) -> None:
        pass

    def on_payload(self, peer_id: bytes, index: int) -> None:
        self.calls.append(("payload", index))

    def on_piece(self, peer_id: bytes, index: int, ok: bool | None) -> None:
        self.calls.append(("piece", (index, ok)))

    def on_request(self, peer_id: bytes, index: int) -> None:
        self.calls.append(("request", index))

    def on_announce(self, peer_id: bytes, index: int) -> None:
        self.calls.append(("announce", index))

    def on_peer_complete(self, peer_id: bytes) -> None:
        self.calls.append(("complete", None))

    def on_error(self, peer_id: bytes, index: int) -> None:
        self.calls.append(("error", index))


class Session:
    def __init__(self, torrent: Torrent) -> None:
        self.torrent = torrent
        self.dispatcher = Exchange()


class Host:
    def __init__(self, admission: Deferred[Session | None] | None = None) -> None:
        self.reactor = Clock()
        self.config = SchedulerConfig(handshake_timeout=5)
        self.uploads = UploadSlots(0, self.reactor)
        self.ingress = self.egress = None
        self.admission = admission
        self.events: list[tuple[str, Any]] = []

    def accept(self, link: PeerLink, hs: wire.Handshake) -> Deferred[Session | None]:
        self.events.append(("accept", hs.peer_id))
        assert self.admission is not None
        return self.admission

    def handshake_message(self, session: Session, peer_id: bytes | None = None) -> bytes:
        return wire.encode_handshake(hello(US, session.torrent))

    def activated(self, link: PeerLink, session: Session, bitfield: Bitfield) -> None:
        self.events.append(("activated", link.peer_id))

    def connection_lost(self, link: PeerLink, session: Session | None, peer_id: bytes) -> None:
        self.events.append(("lost", peer_id))

    def piece_received(
        self, session: Session, from_origin: bool, index: int, ok: bool | None, peer_id: bytes = b""
    ) -> None:
        self.events.append(("received", (index, ok)))

    def piece_sent(self, session: Session, to_origin: bool, index: int, peer_id: bytes = b"") -> None:
        self.events.append(("sent", index))

    def penalise(self, session: Session | None, peer_id: bytes, reason: str) -> None:
        self.events.append(("penalised", reason))


class Transport:
    """The PeerIO: frames written, piece data written, and whether it hung up."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.hung_up = False
        self.draining = True
        self.conn: PeerConnection[Session] | None = None

    def write(self, data: bytes) -> None:
        self.data += data

    def write_frames(self, frames: list[bytes]) -> None:
        for frame in frames:
            self.data += frame

    def write_piece_data(self, data: bytes) -> None:
        self.data += data

    def pump(self) -> None:
        assert self.conn is not None
        while self.draining and self.conn.wants_to_send and self.conn.send_next(PIECE // 4):
            pass

    def hang_up(self) -> None:
        self.hung_up = True

    def sent(self) -> list[wire.Event]:
        events = wire.Decoder().feed(bytes(self.data))
        self.data.clear()
        return [e for e in events if not isinstance(e, wire.PieceChunk)]


def hello(peer_id: bytes, torrent: Torrent, bitfield: Bitfield | None = None) -> wire.Handshake:
    mi = torrent.mi
    return wire.Handshake(peer_id, mi.info_hash, mi.digest.hex, "ns", bitfield or Bitfield(mi.num_pieces))


@pytest.fixture
def blob(tmp_path: Path) -> tuple[MetaInfo, bytes, PieceStore]:
    data = os.urandom(PIECE * 4)
    (tmp_path / "src").write_bytes(data)
    mi = generate(tmp_path / "src", Digest.of_bytes(data), PIECE)
    store = PieceStore(CAStore(tmp_path / "cas"))
    return mi, data, store


def seeded(store: PieceStore, mi: MetaInfo, data: bytes) -> Torrent:
    tmp = store.cas.temp_path()
    tmp.write_bytes(data)
    store.cas.ingest(tmp, mi.digest)
    torrent = store.seed(mi)
    assert torrent is not None
    return torrent


def session(conn: PeerConnection[Session]) -> Session:
    assert conn.session is not None
    return conn.session


def dialled(torrent: Torrent, host: Host | None = None) -> tuple[PeerConnection[Session], Host, Transport]:
    host = host or Host()
    io = Transport()
    conn = PeerConnection(host, io, Session(torrent), expected=THEM)
    io.conn = conn
    conn.connected(is_origin=False)
    return conn, host, io


def test_dialling_side_sends_its_handshake_and_activates_on_the_answer(blob: Any) -> None:
    mi, _, store = blob
    conn, host, io = dialled(torrent := store.open_download(mi))
    assert [type(e) for e in io.sent()] == [wire.Handshake]
    conn.receive([hello(THEM, torrent)])
    assert conn.state is State.ACTIVE and host.events == [("activated", THEM)]
    host.reactor.advance(10)
    assert not conn.closed, "the handshake timeout is cancelled once active"


def test_handshake_timeout_closes(blob: Any) -> None:
    mi, _, store = blob
    conn, host, io = dialled(store.open_download(mi))
    host.reactor.advance(5)
    assert conn.closed and io.hung_up


def test_handshake_naming_another_peer_is_refused_and_penalised(blob: Any) -> None:
    mi, _, store = blob
    conn, host, io = dialled(torrent := store.open_download(mi))
    io.sent()
    conn.receive([hello(b"x" * 20, torrent)])
    [error] = io.sent()
    assert isinstance(error, wire.ErrorMessage) and error.code == wire.E_REFUSED
    assert ("penalised", "handshake names another peer or blob") in host.events
    assert conn.closed and io.hung_up


def test_events_during_admission_wait_for_the_host(blob: Any) -> None:
    mi, data, store = blob
    seed = seeded(store, mi, data)
    admission: Deferred[Session | None] = Deferred()
    host = Host(admission)
    io = Transport()
    conn: PeerConnection[Session] = PeerConnection(host, io)
    io.conn = conn
    conn.connected(is_origin=False)
    conn.receive([hello(THEM, seed), wire.PieceRequest(1)])
    assert conn.state is State.ADMITTING and not io.sent()
    conn.receive([wire.AnnouncePiece(2)])
    session = Session(seed)
    admission.callback(session)
    assert conn.active and conn.session is session
    assert session.dispatcher.calls == [("request", 1), ("announce", 2)]
    assert [type(e) for e in io.sent()] == [wire.Handshake]


def test_refused_admission_leaves_the_connection_inactive(blob: Any) -> None:
    mi, _, store = blob
    host = Host(succeed(None))
    io = Transport()
    conn: PeerConnection[Session] = PeerConnection(host, io)
    conn.connected(is_origin=False)
    conn.receive([hello(THEM, store.open_download(mi))])
    assert not conn.active and conn.session is None


def test_messages_before_the_handshake_are_answered_with_an_error(blob: Any) -> None:
    mi, _, store = blob
    conn, _, io = dialled(store.open_download(mi))
    io.sent()
    conn.receive([wire.PieceRequest(0)])
    [error] = io.sent()
    assert isinstance(error, wire.ErrorMessage) and error.message == "expected a handshake first"
    assert conn.closed


def test_wire_error_is_answered_with_bad_message_and_closes(blob: Any) -> None:
    mi, _, store = blob
    conn, host, io = dialled(torrent := store.open_download(mi))
    conn.receive([hello(THEM, torrent)])
    io.sent()
    with pytest.raises(wire.WireError) as e:
        wire.Decoder().feed(b"\x00\x00\x00\x01\x63")
    conn.wire_error(e.value)
    [error] = io.sent()
    assert isinstance(error, wire.ErrorMessage) and error.code == wire.E_BAD_MESSAGE
    assert error.message == "unknown message type 99"
    assert conn.closed and ("penalised", "protocol error: unknown message type 99") in host.events


def test_received_piece_goes_to_disk_and_is_reported(blob: Any) -> None:
    mi, data, store = blob
    conn, host, _ = dialled(torrent := store.open_download(mi))
    conn.receive([hello(THEM, torrent)])
    piece = data[PIECE : 2 * PIECE]
    frame = wire.encode_payload_header(1, PIECE) + piece
    conn.receive(wire.Decoder().feed(frame))
    assert 1 in torrent.have
    assert ("received", (1, True)) in host.events
    assert session(conn).dispatcher.calls == [("payload", 1), ("piece", (1, True))]


def test_wrong_piece_length_is_a_protocol_error(blob: Any) -> None:
    mi, _, store = blob
    conn, host, io = dialled(torrent := store.open_download(mi))
    conn.receive([hello(THEM, torrent)])
    io.sent()
    conn.receive([wire.PiecePayload(0, PIECE - 1)])
    [error] = io.sent()
    assert isinstance(error, wire.ErrorMessage) and "has 1024 bytes, not 1023" in error.message
    assert ("penalised", "wrong piece length") in host.events and conn.closed


def test_sending_a_piece_holds_control_frames_until_it_is_out(blob: Any) -> None:
    mi, data, store = blob
    conn, host, io = dialled(torrent := seeded(store, mi, data))
    conn.receive([hello(THEM, torrent)])
    io.sent()
    io.draining = False  # the test sends each chunk itself
    conn.send_piece(2)
    assert conn.send_next(PIECE // 4)  # header and the first quarter
    conn.send_announce(3)
    while conn.sending:
        conn.send_next(PIECE // 4)
    events = wire.Decoder().feed(bytes(io.data))
    sent = b"".join(bytes(e.data) for e in events if isinstance(e, wire.PieceChunk))
    assert sent == data[2 * PIECE : 3 * PIECE]
    kinds = [type(e).__name__ for e in events if not isinstance(e, wire.PieceChunk)]
    assert kinds == ["PiecePayload", "PieceEnd", "AnnouncePiece"]
    assert ("sent", 2) in host.events


def test_connection_lost_before_the_handshake_names_the_expected_peer(blob: Any) -> None:
    mi, _, store = blob
    conn, host, _ = dialled(store.open_download(mi))
    conn.connection_lost()
    assert host.events == [("lost", THEM)] and conn.closed
