"""One peer connection's state machine (sans-IO), and the interfaces around it.

:class:`PeerConnection` takes decoded :mod:`kraken.p2p.wire` events and answers with frames
written through :class:`PeerIO` (the Twisted adapter in :mod:`kraken.p2p.conn`) and with
calls to its :class:`PeerHost` (the scheduler) and the blob's :class:`PieceExchange` (the
dispatcher). It knows no socket and no reactor beyond the host's clock, which times the
handshake. Its life::

    HANDSHAKING --handshake--> ACTIVE                (the side that dialled)
    HANDSHAKING --handshake--> ADMITTING --> ACTIVE  (the side that accepted; the host decides,
                                                      events arriving meanwhile wait)
    any state --close / lost--> CLOSED

The scheduler and the dispatcher see a connection only as a :class:`PeerLink`.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.p2p import wire
from kraken.p2p.bandwidth import TokenBucket
from kraken.p2p.bitfield import Bitfield
from kraken.p2p.storage import PieceWriter, Torrent
from kraken.p2p.uploads import UploadSlots

# Connection logs keep the namespace they had when this code lived in conn.py.
log = Logger(namespace="kraken.p2p.conn")


@dataclass(frozen=True)
class PeerInfo:
    """A peer the tracker handed out, to dial."""

    peer_id: bytes
    ip: str
    port: int
    origin: bool = False
    complete: bool = False


class PeerLink(Protocol):
    """One peer connection as the scheduler and the dispatcher see it."""

    @property
    def peer_id(self) -> bytes: ...
    @property
    def is_origin(self) -> bool: ...
    @property
    def closed(self) -> bool: ...

    def send_request(self, index: int) -> None: ...
    def send_cancel(self, index: int) -> None: ...
    def send_announce(self, index: int) -> None: ...
    def send_complete(self) -> None: ...
    def send_error(self, index: int, code: int, message: str) -> None: ...
    def send_piece(self, index: int) -> None: ...
    def close(self, reason: str) -> None: ...
    def abort(self, code: int, reason: str) -> None: ...


class PieceExchange(Protocol):
    """What a connection tells the blob's dispatcher about its peer."""

    def on_progress(self, peer_id: bytes) -> None: ...
    def on_payload(self, peer_id: bytes, index: int) -> None: ...
    def on_piece(self, peer_id: bytes, index: int, ok: bool | None) -> None: ...
    def on_request(self, peer_id: bytes, index: int) -> None: ...
    def on_announce(self, peer_id: bytes, index: int) -> None: ...
    def on_peer_complete(self, peer_id: bytes) -> None: ...
    def on_error(self, peer_id: bytes, index: int) -> None: ...


class BlobSession(Protocol):
    """The blob a connection exchanges: its pieces and its dispatcher."""

    @property
    def torrent(self) -> Torrent: ...
    @property
    def dispatcher(self) -> PieceExchange: ...


class ConnConfig(Protocol):
    @property
    def handshake_timeout(self) -> float: ...
    @property
    def send_lowat(self) -> int: ...
    @property
    def tcp_congestion(self) -> str: ...


S = TypeVar("S", bound=BlobSession)


class PeerHost(Protocol[S]):
    """What a connection needs from the host's scheduler (the session type is the host's)."""

    @property
    def reactor(self) -> IReactorTime: ...
    @property
    def config(self) -> ConnConfig: ...
    @property
    def uploads(self) -> UploadSlots: ...
    @property
    def ingress(self) -> TokenBucket | None: ...
    @property
    def egress(self) -> TokenBucket | None: ...

    def accept(self, link: PeerLink, hs: wire.Handshake) -> Deferred[S | None]:
        """Admission of an incoming peer: fires with the blob's session, or ``None`` (refused)."""
    def handshake_message(self, session: S, peer_id: bytes | None = None) -> bytes: ...
    def activated(self, link: PeerLink, session: S, bitfield: Bitfield) -> None: ...
    def connection_lost(self, link: PeerLink, session: S | None, peer_id: bytes) -> None: ...
    def piece_received(
        self, session: S, from_origin: bool, index: int, ok: bool | None, peer_id: bytes = b""
    ) -> None: ...
    def piece_sent(self, session: S, to_origin: bool, index: int, peer_id: bytes = b"") -> None: ...
    def penalise(self, session: S | None, peer_id: bytes, reason: str) -> None: ...


class PeerIO(Protocol):
    """What the state machine asks of the transport adapter."""

    def write(self, data: bytes) -> None: ...
    def write_frames(self, frames: list[bytes]) -> None: ...
    def write_piece_data(self, data: bytes) -> None: ...
    def pump(self) -> None:
        """Piece data is queued: send it (via :meth:`PeerConnection.send_next`) as the
        transport and the bandwidth limit allow."""
    def hang_up(self) -> None: ...


class Dialer(Protocol[S]):
    """Opens an outgoing connection to *peer* for *session*; fires once connected."""

    def __call__(self, host: PeerHost[S], session: S, peer: PeerInfo) -> Deferred[Any]: ...


class State(enum.Enum):
    HANDSHAKING = "handshaking"
    ADMITTING = "admitting"
    ACTIVE = "active"
    CLOSED = "closed"


# The per-chunk paths compare against these: an Enum member lookup costs about 100 ns.
_HANDSHAKING, _ADMITTING, _ACTIVE, _CLOSED = State.HANDSHAKING, State.ADMITTING, State.ACTIVE, State.CLOSED


class PeerConnection(Generic[S]):
    """One connection per (peer, blob). *session* is given to the side that dials; the side
    that accepts learns it from the handshake, through :meth:`PeerHost.accept`."""

    def __init__(
        self, host: PeerHost[S], io: PeerIO, session: S | None = None, expected: bytes | None = None
    ) -> None:
        self.host = host
        self.io = io
        self.session = session
        self.expected_peer_id = expected
        self.opener = session is not None
        self.state = _HANDSHAKING
        self.peer_id = b""  # learnt from the handshake
        self.is_origin = False  # the peer's certificate names an origin
        self._backlog: list[wire.Event] = []  # events that arrived while ADMITTING
        self._writer: PieceWriter | None = None
        self._sendq: deque[int] = deque()
        self._send_pos = 0
        self._held: list[bytes] = []  # control frames waiting for the piece being streamed
        self._timeout: IDelayedCall | None = None

    # -- the PeerLink view ------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self.state is _CLOSED

    @property
    def active(self) -> bool:
        return self.state is _ACTIVE

    @property
    def sending(self) -> bool:
        """Pieces are queued or streaming to the peer."""
        return bool(self._sendq)

    # -- connection life ----------------------------------------------------------------------
    def connected(self, is_origin: bool) -> None:
        """The transport is up; *is_origin*: the peer's certificate names an origin."""
        self.is_origin = is_origin
        self._timeout = self.host.reactor.callLater(
            self.host.config.handshake_timeout, self.close, "handshake timed out"
        )
        if self.opener and self.session is not None:
            self.io.write(self.host.handshake_message(self.session))

    def connection_lost(self) -> None:
        self.state = _CLOSED
        self.host.uploads.release(self)
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        # A dial refused before the handshake never learnt the peer id: it is the one we expected.
        self.host.connection_lost(self, self.session, self.peer_id or self.expected_peer_id or b"")

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.state = _CLOSED
        log.debug("closing peer connection {peer}: {reason}", peer=self.peer_id.hex()[:12], reason=reason)
        self._sendq.clear()
        self.host.uploads.release(self)
        self.io.hang_up()

    def abort(self, code: int, reason: str) -> None:
        """Tell the peer what went wrong, then close."""
        if not self.closed:
            if not self._send_pos:
                self.io.write(wire.encode_error(0, code, reason))
            self.close(reason)

    # -- receiving -----------------------------------------------------------------------------
    def wire_error(self, error: wire.WireError) -> None:
        """The peer's bytes do not decode: answer with an ERROR frame and close."""
        log.warn("peer {peer} broke the wire protocol: {error}", peer=self.peer_id.hex()[:12], error=error)
        self.host.penalise(self.session, self.peer_id, f"protocol error: {error}")
        self.abort(wire.E_BAD_MESSAGE, str(error))

    def receive(self, events: list[wire.Event]) -> None:
        for i, event in enumerate(events):
            state = self.state
            if state is _CLOSED:
                return
            if state is _ADMITTING:
                self._backlog.extend(events[i:])
                return
            self._handle(event)

    def _handle(self, event: wire.Event) -> None:
        if isinstance(event, wire.PieceChunk):
            if self._writer is not None:
                self._writer.write(event.data)
            if self.session is not None:
                self.session.dispatcher.on_progress(self.peer_id)
            return
        if isinstance(event, wire.Handshake):
            self._on_handshake(event)
            return
        session = self.session
        if self.state is not _ACTIVE or session is None:
            if isinstance(event, wire.ErrorMessage):
                self.close(f"peer refused: {event.message}")
                return
            self.abort(wire.E_BAD_MESSAGE, "expected a handshake first")
            return
        dispatcher = session.dispatcher
        num = session.torrent.mi.num_pieces
        if isinstance(event, (wire.PieceRequest, wire.AnnouncePiece, wire.PiecePayload)) and not (
            0 <= event.index < num
        ):
            self.host.penalise(session, self.peer_id, f"piece index {event.index} out of range")
            self.abort(wire.E_BAD_MESSAGE, f"piece index {event.index} out of range 0..{num - 1}")
            return
        if isinstance(event, wire.PiecePayload):
            size = session.torrent.mi.piece_size(event.index)
            if event.length != size:
                self.host.penalise(session, self.peer_id, "wrong piece length")
                self.abort(wire.E_BAD_MESSAGE, f"piece {event.index} has {size} bytes, not {event.length}")
                return
            self._writer = session.torrent.begin_piece(event.index)
            dispatcher.on_payload(self.peer_id, event.index)
        elif isinstance(event, wire.PieceEnd):
            ok = self._writer.finish() if self._writer is not None else None
            self._writer = None
            self.host.piece_received(session, self.is_origin, event.index, ok, self.peer_id)
            dispatcher.on_piece(self.peer_id, event.index, ok)
        elif isinstance(event, wire.PieceRequest):
            dispatcher.on_request(self.peer_id, event.index)
        elif isinstance(event, wire.AnnouncePiece):
            dispatcher.on_announce(self.peer_id, event.index)
        elif isinstance(event, wire.Complete):
            dispatcher.on_peer_complete(self.peer_id)
        elif isinstance(event, wire.CancelPiece):
            self._cancel(event.index)
        elif isinstance(event, wire.ErrorMessage):
            dispatcher.on_error(self.peer_id, event.index)

    def _on_handshake(self, hs: wire.Handshake) -> None:
        if self.state is _ACTIVE:
            self.abort(wire.E_BAD_MESSAGE, "second handshake on an established connection")
            return
        self.peer_id = hs.peer_id
        if self.opener:
            assert self.session is not None
            if hs.peer_id != self.expected_peer_id or hs.info_hash != self.session.torrent.info_hash:
                self.host.penalise(self.session, hs.peer_id, "handshake names another peer or blob")
                self.abort(wire.E_REFUSED, "handshake does not match the announced peer and blob")
                return
            self._activate(self.session, hs)
            return
        self.state = _ADMITTING
        d = self.host.accept(self, hs)
        d.addCallback(self._admitted, hs)
        d.addErrback(self._admission_failed)

    def _admitted(self, session: S | None, hs: wire.Handshake) -> None:
        backlog, self._backlog = self._backlog, []
        if self.state is _ADMITTING:
            self.state = _HANDSHAKING
        if session is None or self.closed:
            return
        self.session = session
        self.io.write(self.host.handshake_message(session, self.peer_id))
        self._activate(session, hs)
        self.receive(backlog)

    def _admission_failed(self, failure: Failure) -> None:
        log.failure("accepting a peer failed", failure)
        self.close("internal error")

    def _activate(self, session: S, hs: wire.Handshake) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        if hs.bitfield.size != session.torrent.mi.num_pieces:
            self.abort(wire.E_BAD_MESSAGE, "bitfield size does not match the piece count")
            return
        self.state = _ACTIVE
        self.host.activated(self, session, hs.bitfield)

    # -- sending -----------------------------------------------------------------------------------
    def _send(self, frame: bytes) -> None:
        """Write a control frame, or hold it until the piece being streamed is complete."""
        if self.closed:
            return
        if self._send_pos:
            self._held.append(frame)
        else:
            self.io.write(frame)

    def send_request(self, index: int) -> None:
        self._send(wire.encode_request(index))

    def send_cancel(self, index: int) -> None:
        self._send(wire.encode_cancel(index))

    def send_announce(self, index: int) -> None:
        self._send(wire.encode_announce(index))

    def send_complete(self) -> None:
        self._send(wire.encode_complete())

    def send_error(self, index: int, code: int, message: str) -> None:
        self._send(wire.encode_error(index, code, message))

    def send_piece(self, index: int) -> None:
        self._sendq.append(index)
        self.io.pump()

    def _cancel(self, index: int) -> None:
        """Drop a queued piece the peer no longer wants (one already streaming goes on)."""
        streaming = self._sendq.popleft() if self._sendq and self._send_pos else None
        if index in self._sendq:
            self._sendq.remove(index)
        if streaming is not None:
            self._sendq.appendleft(streaming)
        if not self._sendq:
            self.host.uploads.release(self)

    def slot_granted(self) -> None:
        """The host's upload slots let this connection stream its next piece."""
        if self._sendq and not self.closed:
            self.io.pump()
        else:
            self.host.uploads.release(self)

    def stop_sending(self) -> None:
        """The transport will take no more data."""
        self._sendq.clear()
        self.host.uploads.release(self)

    @property
    def wants_to_send(self) -> bool:
        return bool(self._sendq) and self.state is not _CLOSED and self.session is not None

    def send_next(self, max_bytes: int) -> bool:
        """Write up to *max_bytes* of the piece being streamed (and its header first); False
        when nothing can be sent now (waiting for an upload slot, or closed on a read error)."""
        session = self.session
        assert session is not None
        index = self._sendq[0]
        torrent = session.torrent
        size = torrent.mi.piece_size(index)
        if self._send_pos == 0:
            if not self.host.uploads.acquire(self):
                return False
            self.io.write(wire.encode_payload_header(index, size))
        n = min(max_bytes, size - self._send_pos)
        chunk = torrent.read(index, self._send_pos, n)
        if len(chunk) != n:
            log.error("short read of piece {index}", index=index)
            self.close("local read error")
            return False
        self.io.write_piece_data(chunk)
        self._send_pos += n
        if self._send_pos >= size:
            self._sendq.popleft()
            self._send_pos = 0
            self.host.uploads.release(self)
            if self._held:
                self.io.write_frames(self._held)
                self._held = []
            self.host.piece_sent(session, self.is_origin, index, self.peer_id)
        return True
