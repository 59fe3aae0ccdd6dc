"""The memcached-protocol listener: a thin Twisted adapter around :class:`Session`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime, ITCPTransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger, LogLevel
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from kraken.core.tls import peer_identity
from kraken.core.transport import IStreamTransport
from kraken.pubsub import wire
from kraken.pubsub.admission import Admission, Refused
from kraken.pubsub.router import Router
from kraken.pubsub.session import Session
from kraken.pubsub.subscriber import QueueSubscriber

log = Logger(namespace="kraken.pubsub.server")


@dataclass(frozen=True)
class Limits:
    max_clients: int = 1000
    max_clients_per_ip: int = 250
    idle_timeout: float = 3600.0
    first_command_timeout: float = 30.0
    evict_idle_after: float = 60.0
    max_queue_messages: int = 100_000
    max_queue_bytes: int = 64 * 1024 * 1024
    max_line: int = wire.DEFAULT_MAX_LINE
    max_value: int = wire.DEFAULT_MAX_VALUE


@implementer(IPushProducer)
class MemcachedProtocol(Protocol, TimeoutMixin):
    """Back-pressure: while the client does not read our replies (the transport's buffer is
    full and it pauses us), we stop reading its commands."""

    factory: MemcachedFactory
    transport: IStreamTransport
    session: Session | None = None
    commanded = False  # completed a command: idle_timeout applies, no longer first_command_timeout
    last_command = float("-inf")

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        """The idle timer runs on the factory's clock."""
        return self.factory.clock.callLater(period, func)

    def connectionMade(self) -> None:
        factory = self.factory
        peer = self.transport.getPeer()
        try:
            displaced = factory.admission.admit(self, getattr(peer, "host", None), factory.clock.seconds())
        except Refused as e:
            factory.rejected += 1
            if e.per_address:
                factory.rejected_per_ip += 1
                self.transport.write(wire.TOO_MANY_CLIENTS_FROM_ADDRESS)
            else:
                self.transport.write(wire.TOO_MANY_CLIENTS)
            self.transport.loseConnection()
            return
        if displaced is not None:
            displaced.evict()
        router = factory.router
        name = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')} (memcached)"
        limits = factory.limits
        client = QueueSubscriber(
            router.new_id(), name, router.now(), limits.max_queue_messages, limits.max_queue_bytes
        )
        router.connect(client)
        self.session = Session(router, client, factory.limits.max_line, factory.limits.max_value)
        self.session.on_resume = self._late_replies
        identity = peer_identity(self.transport)
        self.session.may_link = identity is not None and identity.role == "pubsub"
        # Until its first complete command a connection has the shorter first_command_timeout,
        # which partial input does not extend.
        timeouts = [t for t in (limits.idle_timeout, limits.first_command_timeout) if t > 0]
        if timeouts:
            self.setTimeout(min(timeouts))
        if ITCPTransport.providedBy(self.transport):
            # replies go out whole at once (as memcached and Redis do): no Nagle wait on the
            # last partial segment of a large get messages reply
            self.transport.setTcpNoDelay(True)
        self.transport.registerProducer(self, True)

    def evict(self) -> None:
        """Close at once: a newcomer took this idle connection's slot."""
        if self.session is not None:
            log.debug("closing {name}: its slot went to a new connection", name=self.session.client.name)
        self.factory.evicted += 1
        self.setTimeout(None)
        self.transport.abortConnection()

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self.session is not None and not self.session.closing and not self.session.waiting:
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        session = self.session
        if session is None or session.closing:
            return
        if self.commanded:
            self.resetTimeout()
        try:
            reply = session.receive(data)
        except Exception:
            # A bug must cost this one connection, never the server or the other clients.
            log.failure("internal error handling {name}", name=session.client.name)
            session.closing = True
            session.error = "internal error"
            reply = b"SERVER_ERROR internal error\r\n"
        self._replied(session, reply)

    def _late_replies(self, reply: bytes) -> None:
        """Replies after an answer the session waited for (a proxy's upstream replay)."""
        session = self.session
        if session is None:
            return
        self._replied(session, reply)
        if not session.waiting and not session.closing:
            self.transport.resumeProducing()

    def _replied(self, session: Session, reply: bytes) -> None:
        if reply:
            self.transport.write(reply)
            now = self.factory.clock.seconds()
            if now - self.last_command >= 1.0:  # idleness counts in seconds: cheap for busy clients
                self._commanded(now)
        if session.waiting:
            self.transport.pauseProducing()
        if session.closing:
            if session.error is not None:
                self.factory.malformed += 1
            self.setTimeout(None)
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def _commanded(self, now: float) -> None:
        self.last_command = now
        factory = self.factory
        factory.admission.commanded(self, now)
        if not self.commanded:
            self.commanded = True
            self.setTimeout(factory.limits.idle_timeout or None)

    def timeoutConnection(self) -> None:
        if self.session is not None:
            # A connection that never sent a command is likely one of many held open on purpose:
            # not worth a line each at the default level.
            why = "idle timeout" if self.commanded else "no command within the first-command timeout"
            level = LogLevel.info if self.commanded else LogLevel.debug
            log.emit(level, "closing {name}: {why}", name=self.session.client.name, why=why)
        self.factory.idle_closed += 1
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.setTimeout(None)
        self.factory.admission.leave(self)
        if self.session is not None:
            self.session.close()
            self.factory.router.disconnect(self.session.client)
            self.session = None


class MemcachedFactory(Factory[MemcachedProtocol]):
    protocol = MemcachedProtocol
    noisy = False

    def __init__(self, router: Router, clock: IReactorTime, limits: Limits | None = None) -> None:
        self.router = router
        self.clock = clock
        self.limits = limits = limits or Limits()
        self.admission: Admission[MemcachedProtocol] = Admission(
            limits.max_clients, limits.max_clients_per_ip, limits.evict_idle_after
        )
        self.rejected = 0
        self.rejected_per_ip = 0
        self.evicted = 0
        self.malformed = 0
        self.idle_closed = 0
