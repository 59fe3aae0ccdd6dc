"""A Twisted client for kraken-pubsub's memcached protocol (used by tests and the benchmark).

    client = yield connect_client(reactor, "127.0.0.1", 12355)
    yield client.subscribe([b"news"])
    yield client.publish([([b"news"], b"hello")])
    records = yield client.messages()     # [([b"news"], b"hello"), ...] from other clients

Commands may be issued without waiting: they are pipelined, answers come back in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, ITransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from kraken.core.endpoints import connect
from kraken.core.tls import TLSSettings
from kraken.pubsub import wire


class PubSubError(Exception):
    """The server answered ERROR, CLIENT_ERROR or SERVER_ERROR."""

    def __init__(self, reply: wire.Reply) -> None:
        super().__init__(f"{reply.kind} {reply.text.decode('utf-8', 'replace')}".strip())
        self.reply = reply


class PubSubClient(Protocol):
    transport: ITransport

    def __init__(self) -> None:
        self._parser = wire.ReplyParser()
        self._waiting: deque[Deferred[wire.Reply]] = deque()
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except wire.WireError:
            self.transport.loseConnection()
            return
        for reply in replies:
            if not self._waiting:
                # SERVER_ERROR Too many clients arrives before any command
                self.server_error = reply
                continue
            d = self._waiting.popleft()
            if reply.kind in ("ERROR", "CLIENT_ERROR", "SERVER_ERROR"):
                d.errback(PubSubError(reply))
            else:
                d.callback(reply)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(reason)
        if not self.closed.called:
            self.closed.callback(None)

    def send(self, data: bytes) -> Deferred[wire.Reply]:
        """Send raw command bytes expecting one reply."""
        d: Deferred[wire.Reply] = Deferred()
        self._waiting.append(d)
        self.transport.write(data)
        return d

    def _stored(self, data: bytes) -> Deferred[bool]:
        return self.send(data).addCallback(lambda reply: reply.kind == "STORED")

    def subscribe(self, topics: Iterable[bytes]) -> Deferred[bool]:
        """``True`` on STORED, ``False`` on NOT_FOUND (replay impossible; still subscribed)."""
        return self._stored(wire.set_command(b"subscribe", b" ".join(topics)))

    def unsubscribe(self, topics: Iterable[bytes]) -> Deferred[bool]:
        return self._stored(wire.set_command(b"unsubscribe", b" ".join(topics)))

    def publish(self, records: Iterable[tuple[Sequence[bytes], bytes]]) -> Deferred[bool]:
        return self._stored(wire.set_command(b"publish", wire.publish_body(records)))

    def register(self) -> Deferred[bool]:
        return self._stored(wire.set_command(b"register", b""))

    def retro_subscribe(self, since: float, topics: Iterable[bytes]) -> Deferred[bool]:
        data = b"%.6f\r\n%s" % (since, b" ".join(topics))
        return self._stored(wire.set_command(b"retro_subscribe", data))

    def psubscribe(self, patterns: Iterable[bytes]) -> Deferred[bool]:
        """Subscribe to NATS-style patterns (``a.*.c``, ``a.>``); results as :meth:`subscribe`."""
        return self._stored(wire.set_command(b"psubscribe", b" ".join(patterns)))

    def punsubscribe(self, patterns: Iterable[bytes]) -> Deferred[bool]:
        return self._stored(wire.set_command(b"punsubscribe", b" ".join(patterns)))

    def retro_psubscribe(self, since: float, patterns: Iterable[bytes]) -> Deferred[bool]:
        data = b"%.6f\r\n%s" % (since, b" ".join(patterns))
        return self._stored(wire.set_command(b"retro_psubscribe", data))

    def messages(self) -> Deferred[list[wire.Record]]:
        return self.send(wire.get_command()).addCallback(lambda reply: reply.records())

    def quit(self) -> Deferred[None]:
        self.transport.write(b"quit\r\n")
        return self.closed


def connect_client(
    reactor: IReactorTime, host: str, port: int, tls: TLSSettings | None = None
) -> Deferred[PubSubClient]:
    """Connect (mutual TLS when *tls* is given); fires with the ready :class:`PubSubClient`."""
    return connect(reactor, host, port, Factory.forProtocol(PubSubClient), tls, {"pubsub"})
