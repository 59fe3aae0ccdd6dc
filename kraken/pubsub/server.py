"""The memcached-protocol listener: a thin Twisted adapter around :class:`Session`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from kraken.core.transport import IStreamTransport
from kraken.pubsub import wire
from kraken.pubsub.router import Router
from kraken.pubsub.session import Session
from kraken.pubsub.subscriber import QueueSubscriber

log = Logger(namespace="kraken.pubsub.server")


@dataclass(frozen=True)
class Limits:
    max_clients: int = 1000
    idle_timeout: float = 3600.0
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

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        """The idle timer runs on the factory's clock."""
        return self.factory.clock.callLater(period, func)

    def connectionMade(self) -> None:
        factory = self.factory
        factory.open += 1
        if factory.open > factory.limits.max_clients:
            factory.rejected += 1
            log.info("Server reached max clients. Rejecting connection.")
            self.transport.write(wire.TOO_MANY_CLIENTS)
            self.transport.loseConnection()
            return
        router = factory.router
        peer = self.transport.getPeer()
        name = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')} (memcached)"
        limits = factory.limits
        client = QueueSubscriber(
            router.new_id(), name, router.now(), limits.max_queue_messages, limits.max_queue_bytes
        )
        router.connect(client)
        self.session = Session(router, client, factory.limits.max_line, factory.limits.max_value)
        if factory.limits.idle_timeout > 0:
            self.setTimeout(factory.limits.idle_timeout)
        self.transport.registerProducer(self, True)

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self.session is not None and not self.session.closing:
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        session = self.session
        if session is None or session.closing:
            return
        self.resetTimeout()
        try:
            reply = session.receive(data)
        except Exception:
            # A bug must cost this one connection, never the server or the other clients.
            log.failure("internal error handling {name}", name=session.client.name)
            session.closing = True
            session.error = "internal error"
            reply = b"SERVER_ERROR internal error\r\n"
        if reply:
            self.transport.write(reply)
        if session.closing:
            if session.error is not None:
                self.factory.malformed += 1
            self.setTimeout(None)
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def timeoutConnection(self) -> None:
        if self.session is not None:
            log.info("closing {name}: idle timeout", name=self.session.client.name)
        self.factory.idle_closed += 1
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.setTimeout(None)
        self.factory.open -= 1
        if self.session is not None:
            self.factory.router.disconnect(self.session.client)
            self.session = None


class MemcachedFactory(Factory[MemcachedProtocol]):
    protocol = MemcachedProtocol
    noisy = False

    def __init__(self, router: Router, clock: IReactorTime, limits: Limits | None = None) -> None:
        self.router = router
        self.clock = clock
        self.limits = limits or Limits()
        self.open = 0
        self.rejected = 0
        self.malformed = 0
        self.idle_closed = 0
