"""The Twisted adapter of the peer wire: one connection per (peer, blob), over mutual TLS.

:class:`PeerProtocol` feeds received bytes to the :mod:`kraken.p2p.wire` decoder and the
events to its :class:`~kraken.p2p.peer.PeerConnection`, which holds the connection's state;
it writes what that state machine sends. Piece payloads go straight from the socket to their
place in the file; outgoing pieces are read from disk in chunks only as fast as the transport
drains (it is our push producer's consumer), and both directions pass through the host's
token buckets when bandwidth limits are set. :class:`PeerDialer` opens outgoing connections
for the scheduler.
"""

from __future__ import annotations

from typing import Any, Generic

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from kraken.core.endpoints import connect
from kraken.core.tls import TLSSettings
from kraken.core.transport import IStreamTransport
from kraken.p2p import sockopts, wire
from kraken.p2p.peer import PeerConnection, PeerHost, PeerInfo, S

SEND_CHUNK = 256 * 1024


@implementer(IPushProducer)
class PeerProtocol(protocol.Protocol, Generic[S]):
    transport: IStreamTransport

    def __init__(self, host: PeerHost[S], session: S | None = None, expected: bytes | None = None) -> None:
        self.host = host
        self.peer = PeerConnection(host, self, session, expected)
        self.decoder = wire.Decoder()
        self._paused = False
        self._pump_call: IDelayedCall | None = None
        self._read_paused: IDelayedCall | None = None

    # -- connection life ----------------------------------------------------------------------
    def connectionMade(self) -> None:
        identity = getattr(self.transport, "peer", None)
        self.transport.registerProducer(self, True)
        config = self.host.config
        sockopts.tune(self.transport, config.send_lowat, config.tcp_congestion)
        self.peer.connected(identity is not None and identity.role == "origin")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        for call in (self._pump_call, self._read_paused):
            if call is not None and call.active():
                call.cancel()
        self.peer.connection_lost()

    # -- receiving -----------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        peer = self.peer
        if peer.closed:
            return
        try:
            events = self.decoder.feed(data)
        except wire.WireError as e:
            peer.wire_error(e)
            return
        bucket = self.host.ingress
        if bucket is not None:
            delay = bucket.consume(len(data))
            if delay > 0 and self._read_paused is None:
                self.transport.pauseProducing()
                self._read_paused = self.host.reactor.callLater(delay, self._resume_reading)
        peer.receive(events)

    def _resume_reading(self) -> None:
        self._read_paused = None
        if not self.peer.closed:
            self.transport.resumeProducing()

    # -- the PeerIO the state machine writes through ----------------------------------------------
    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def write_frames(self, frames: list[bytes]) -> None:
        self.transport.writeSequence(frames)

    def write_piece_data(self, data: bytes) -> None:
        self.transport.write(data)
        bucket = self.host.egress
        if bucket is not None:
            bucket.consume(len(data))

    def hang_up(self) -> None:
        # TLS waits for a registered producer to go away before it shuts down: without this the
        # connection (and its slot for the blob) would never close.
        self.transport.unregisterProducer()
        self.transport.loseConnection()

    def pump(self) -> None:
        if self._pump_call is not None and self._pump_call.active():
            return
        self._pump_call = None
        peer = self.peer
        rounds = 0
        while not self._paused and peer.wants_to_send:
            bucket = self.host.egress
            if bucket is not None and (wait := bucket.delay()) > 0:
                self._pump_call = self.host.reactor.callLater(wait, self.pump)
                return
            if rounds >= 16:
                self._pump_call = self.host.reactor.callLater(0, self.pump)
                return
            rounds += 1
            if not peer.send_next(SEND_CHUNK):
                return

    # -- sending, as a push producer ---------------------------------------------------------------
    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self.pump()

    def stopProducing(self) -> None:
        self._paused = True
        self.peer.stop_sending()


class PeerFactory(protocol.Factory, Generic[S]):
    """Builds protocols for incoming peers (the acceptor side)."""

    noisy = False

    def __init__(self, host: PeerHost[S]) -> None:
        self.host = host

    def buildProtocol(self, addr: IAddress | None) -> PeerProtocol[S]:
        return PeerProtocol(self.host)


class DialFactory(protocol.Factory, Generic[S]):
    noisy = False

    def __init__(self, host: PeerHost[S], session: S, expected: bytes) -> None:
        self.host = host
        self.session = session
        self.expected = expected

    def buildProtocol(self, addr: IAddress | None) -> PeerProtocol[S]:
        return PeerProtocol(self.host, self.session, self.expected)


class PeerDialer:
    """Opens outgoing peer connections (over mutual TLS when *tls* is set) for a scheduler."""

    def __init__(self, reactor: IReactorTime, tls: TLSSettings | None) -> None:
        self.reactor = reactor
        self.tls = tls

    def __call__(self, host: PeerHost[S], session: S, peer: PeerInfo) -> Deferred[Any]:
        return connect(
            self.reactor,
            peer.ip,
            peer.port,
            DialFactory(host, session, peer.peer_id),
            self.tls,
            {"agent", "origin"} if self.tls is not None else None,
            timeout=host.config.handshake_timeout,
        )
