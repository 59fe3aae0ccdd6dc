"""The Twisted adapter of the peer wire: one connection per (peer, blob), over mutual TLS.

:class:`PeerProtocol` feeds received bytes to the :mod:`kraken.p2p.wire` decoder and hands
the events to the :class:`~kraken.p2p.scheduler.Scheduler` (handshakes) and the blob's
:class:`~kraken.p2p.dispatch.Dispatcher` (everything after). Piece payloads go straight from
the socket to their place in the file; outgoing pieces are read from disk in chunks only as
fast as the transport drains (it is our push producer's consumer), and both directions
pass through the host's token buckets when bandwidth limits are set.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from kraken.p2p import sockopts, wire
from kraken.p2p.storage import PieceWriter

if TYPE_CHECKING:
    from kraken.p2p.scheduler import Scheduler, TorrentControl

log = Logger(namespace="kraken.p2p.conn")
SEND_CHUNK = 256 * 1024


@implementer(IPushProducer)
class PeerProtocol(Protocol):
    def __init__(
        self, scheduler: Scheduler, ctl: TorrentControl | None = None, expected: bytes | None = None
    ) -> None:
        self.scheduler = scheduler
        self.ctl = ctl  # set for the side that dials; the acceptor learns it from the handshake
        self.expected_peer_id = expected
        self.opener = ctl is not None
        self.peer_id = b""
        self.is_origin = False
        self.active = False
        self.closed = False
        self.decoder = wire.Decoder()
        self._backlog: list[wire.Event] | None = None
        self._writer: PieceWriter | None = None
        self._incoming: tuple[int, int] | None = None
        self._sendq: deque[int] = deque()
        self._send_pos = 0
        self._held: list[bytes] = []
        self._paused = False
        self._pump_call: Any = None
        self._read_paused: Any = None
        self._timeout: Any = None

    # -- connection life ----------------------------------------------------------------------
    def connectionMade(self) -> None:
        peer = getattr(self.transport, "peer", None)
        self.is_origin = peer is not None and peer.role == "origin"
        self.transport.registerProducer(self, True)
        config = self.scheduler.config
        sockopts.tune(self.transport, config.send_lowat, config.tcp_congestion)
        self._timeout = self.scheduler.reactor.callLater(
            config.handshake_timeout, self.close, "handshake timed out"
        )
        if self.opener and self.ctl is not None:
            self.transport.write(self.scheduler.handshake_message(self.ctl))

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closed = True
        self.scheduler.uploads.release(self)
        for call in (self._timeout, self._pump_call, self._read_paused):
            if call is not None and call.active():
                call.cancel()
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        self.scheduler.connection_lost(self)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        log.debug("closing peer connection {peer}: {reason}", peer=self.peer_id.hex()[:12], reason=reason)
        self._sendq.clear()
        self.scheduler.uploads.release(self)
        # TLS waits for a registered producer to go away before it shuts down: without this the
        # connection (and its slot for the blob) would never close.
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def abort(self, code: int, reason: str) -> None:
        """Tell the peer what went wrong, then close."""
        if not self.closed:
            if not self._send_pos:
                self.transport.write(wire.encode_error(0, code, reason))
            self.close(reason)

    # -- receiving -----------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.decoder.feed(data)
        except wire.WireError as e:
            log.warn("peer {peer} broke the wire protocol: {error}", peer=self.peer_id.hex()[:12], error=e)
            self.scheduler.penalise(self, f"protocol error: {e}")
            self.abort(wire.E_BAD_MESSAGE, str(e))
            return
        bucket = self.scheduler.ingress
        if bucket is not None:
            delay = bucket.consume(len(data))
            if delay > 0 and self._read_paused is None:
                self.transport.pauseProducing()
                self._read_paused = self.scheduler.reactor.callLater(delay, self._resume_reading)
        if self._backlog is not None:
            self._backlog.extend(events)
            return
        self._handle_all(events)

    def _resume_reading(self) -> None:
        self._read_paused = None
        if not self.closed:
            self.transport.resumeProducing()

    def _handle_all(self, events: list[wire.Event]) -> None:
        for i, event in enumerate(events):
            if self.closed:
                return
            if self._backlog is not None:
                self._backlog.extend(events[i:])
                return
            self._handle(event)

    def _handle(self, event: wire.Event) -> None:
        if isinstance(event, wire.PieceChunk):
            if self._writer is not None:
                self._writer.write(event.data)
            if self.ctl is not None:
                self.ctl.dispatcher.on_progress(self.peer_id)
            return
        if isinstance(event, wire.Handshake):
            self._on_handshake(event)
            return
        if not self.active or self.ctl is None:
            if isinstance(event, wire.ErrorMessage):
                self.close(f"peer refused: {event.message}")
                return
            self.abort(wire.E_BAD_MESSAGE, "expected a handshake first")
            return
        dispatcher = self.ctl.dispatcher
        num = self.ctl.torrent.mi.num_pieces
        if isinstance(event, (wire.PieceRequest, wire.AnnouncePiece, wire.PiecePayload)) and not (
            0 <= event.index < num
        ):
            self.scheduler.penalise(self, f"piece index {event.index} out of range")
            self.abort(wire.E_BAD_MESSAGE, f"piece index {event.index} out of range 0..{num - 1}")
            return
        if isinstance(event, wire.PiecePayload):
            size = self.ctl.torrent.mi.piece_size(event.index)
            if event.length != size:
                self.scheduler.penalise(self, "wrong piece length")
                self.abort(wire.E_BAD_MESSAGE, f"piece {event.index} has {size} bytes, not {event.length}")
                return
            self._incoming = (event.index, event.length)
            self._writer = self.ctl.torrent.begin_piece(event.index)
            dispatcher.on_payload(self.peer_id, event.index)
        elif isinstance(event, wire.PieceEnd):
            ok = self._writer.finish() if self._writer is not None else None
            self._writer = None
            self._incoming = None
            self.scheduler.piece_received(self, event.index, ok)
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
        if self.active:
            self.abort(wire.E_BAD_MESSAGE, "second handshake on an established connection")
            return
        self.peer_id = hs.peer_id
        if self.opener:
            assert self.ctl is not None
            if hs.peer_id != self.expected_peer_id or hs.info_hash != self.ctl.torrent.info_hash:
                self.scheduler.penalise(self, "handshake names another peer or blob")
                self.abort(wire.E_REFUSED, "handshake does not match the announced peer and blob")
                return
            self._activate(self.ctl, hs)
            return
        self._backlog = []
        d = self.scheduler.accept(self, hs)

        def admitted(ctl: TorrentControl | None) -> None:
            backlog, self._backlog = self._backlog or [], None
            if ctl is None or self.closed:
                return
            self.ctl = ctl
            self.transport.write(self.scheduler.handshake_message(ctl, self.peer_id))
            self._activate(ctl, hs)
            self._handle_all(backlog)

        d.addCallback(admitted)
        d.addErrback(lambda f: (log.failure("accepting a peer failed", f), self.close("internal error")))

    def _activate(self, ctl: TorrentControl, hs: wire.Handshake) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        if hs.bitfield.size != ctl.torrent.mi.num_pieces:
            self.abort(wire.E_BAD_MESSAGE, "bitfield size does not match the piece count")
            return
        self.active = True
        self.scheduler.activated(self, ctl, hs.bitfield)

    # -- the Link interface the dispatcher uses ---------------------------------------------------
    def _send(self, frame: bytes) -> None:
        """Write a control frame, or hold it until the piece being streamed is complete."""
        if self.closed:
            return
        if self._send_pos:
            self._held.append(frame)
        else:
            self.transport.write(frame)

    def send_request(self, index: int) -> None:
        self._send(wire.encode_request(index))

    def send_cancel(self, index: int) -> None:
        self._send(wire.encode_cancel(index))

    def _cancel(self, index: int) -> None:
        """Drop a queued piece the peer no longer wants (one already streaming goes on)."""
        streaming = self._sendq.popleft() if self._sendq and self._send_pos else None
        if index in self._sendq:
            self._sendq.remove(index)
        if streaming is not None:
            self._sendq.appendleft(streaming)
        if not self._sendq:
            self.scheduler.uploads.release(self)

    def send_announce(self, index: int) -> None:
        self._send(wire.encode_announce(index))

    def send_complete(self) -> None:
        self._send(wire.encode_complete())

    def send_error(self, index: int, code: int, message: str) -> None:
        self._send(wire.encode_error(index, code, message))

    def send_piece(self, index: int) -> None:
        self._sendq.append(index)
        self._pump()

    # -- sending, as a push producer ---------------------------------------------------------------
    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        self._paused = True
        self._sendq.clear()
        self.scheduler.uploads.release(self)

    def slot_granted(self) -> None:
        if self._sendq and not self.closed:
            self._pump()
        else:
            self.scheduler.uploads.release(self)

    def _pump(self) -> None:
        if self._pump_call is not None and self._pump_call.active():
            return
        self._pump_call = None
        rounds = 0
        while self._sendq and not self._paused and not self.closed and self.ctl is not None:
            bucket = self.scheduler.egress
            if bucket is not None and (wait := bucket.delay()) > 0:
                self._pump_call = self.scheduler.reactor.callLater(wait, self._pump)
                return
            if rounds >= 16:
                self._pump_call = self.scheduler.reactor.callLater(0, self._pump)
                return
            rounds += 1
            index = self._sendq[0]
            torrent = self.ctl.torrent
            size = torrent.mi.piece_size(index)
            if self._send_pos == 0:
                if not self.scheduler.uploads.acquire(self):
                    return
                self.transport.write(wire.encode_payload_header(index, size))
            n = min(SEND_CHUNK, size - self._send_pos)
            chunk = torrent.read(index, self._send_pos, n)
            if len(chunk) != n:
                log.error("short read of piece {index}", index=index)
                self.close("local read error")
                return
            self.transport.write(chunk)
            if bucket is not None:
                bucket.consume(n)
            self._send_pos += n
            if self._send_pos >= size:
                self._sendq.popleft()
                self._send_pos = 0
                self.scheduler.uploads.release(self)
                if self._held:
                    self.transport.writeSequence(self._held)
                    self._held = []
                self.scheduler.piece_sent(self, index)


class PeerFactory(Factory):
    """Builds protocols for incoming peers (the acceptor side)."""

    noisy = False

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def buildProtocol(self, addr: Any) -> PeerProtocol:
        return PeerProtocol(self.scheduler)


class DialFactory(Factory):
    noisy = False

    def __init__(self, scheduler: Scheduler, ctl: TorrentControl, expected: bytes) -> None:
        self.scheduler = scheduler
        self.ctl = ctl
        self.expected = expected

    def buildProtocol(self, addr: Any) -> PeerProtocol:
        return PeerProtocol(self.scheduler, self.ctl, self.expected)
