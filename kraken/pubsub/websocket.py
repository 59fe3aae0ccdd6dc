"""WebSocket push on the same router: no polling, mixes freely with memcached clients.

Client → server
  text frame, a JSON object: ``{"op": "subscribe"|"unsubscribe", "topics": [...]}``,
  ``{"op": "publish", "topics": [...], "payload": "text"}``, ``{"op": "register"}``,
  ``{"op": "retro_subscribe", "since": <unix seconds>, "topics": [...]}``,
  ``{"op": "psubscribe"|"punsubscribe", "patterns": [...]}``,
  ``{"op": "retro_psubscribe", "since": <unix seconds>, "patterns": [...]}``; an optional
  ``"id"`` is echoed in the answer ``{"ok": true, "op": ..., "id": ..., "found": bool}`` or
  ``{"ok": false, "error": "..."}``.
  binary frame: a publish body (``MESSAGE`` records, exactly as ``set publish`` data).
Server → client
  binary frame: one or more ``MESSAGE <topics…> <len>\\r\\n<payload>\\r\\n`` records, the same
  bytes a memcached client gets from ``get messages``; deliveries made in one reactor turn
  travel in one frame.

At most ``max_clients`` push clients at once, and ``max_clients_per_ip`` from one address: the
next handshake is answered with HTTP 503, unless a client that never sent a command (it
receives nothing) can make room (:mod:`kraken.pubsub.admission`).
Clients are pinged every ``ping_interval`` seconds, and one that does not answer within
``ping_timeout`` is dropped, so a vanished client does not keep its slot and queue.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from kraken.core import jsonlimits
from kraken.core.jsonlimits import JSONLimitError
from kraken.core.tls import SeesTLSLayer
from kraken.core.transport import IStreamTransport
from kraken.pubsub import wire
from kraken.pubsub.admission import Admission, Refused
from kraken.pubsub.router import OverLimit, Pending, Router
from kraken.pubsub.subscriber import Subscriber

log = Logger(namespace="kraken.pubsub.websocket")


@implementer(IPushProducer)
class PushSubscriber(Subscriber):
    """Delivers to a WebSocket: records gathered during one reactor turn go out in one frame.

    It is the push producer of its connection: while the client does not keep up (the
    transport pauses it) records wait here, bounded like a memcached queue (oldest dropped
    first), and go out together when the transport resumes it."""

    kind = "websocket"

    def __init__(self, ident: int, name: str, now: float, protocol: PushProtocol, max_bytes: int) -> None:
        super().__init__(ident, name, now)
        self.protocol = protocol
        self.pending: list[bytes] = []
        self.counts: list[int] = []
        self.size = 0
        self.max_bytes = max_bytes
        self._flush_call: IDelayedCall | None = None
        self.paused = False

    def deliver(self, records: bytes, count: int = 1) -> None:
        self.pending.append(records)
        self.counts.append(count)
        self.size += len(records)
        self.received += count
        if self.size > self.max_bytes:
            while self.pending and self.size > self.max_bytes:
                self.size -= len(self.pending.pop(0))
                self.dropped += self.counts.pop(0)
        if self._flush_call is None and not self.paused:
            self._flush_call = self.protocol.factory.clock.callLater(0, self.flush)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.flush()

    def stopProducing(self) -> None:
        self.paused = True

    def flush(self) -> None:
        self._flush_call = None
        if not self.pending or self.paused:
            return
        block = b"".join(self.pending)
        self.pending.clear()
        self.counts.clear()
        self.size = 0
        self.last_receive = self.protocol.factory.router.now()
        self.protocol.sendMessage(block, isBinary=True)

    def cancel(self) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None

    def depth(self) -> int:
        return sum(self.counts)

    def queued_bytes(self) -> int:
        return self.size


class CommandError(ValueError):
    pass


def _topics(message: dict[str, Any], field: str = "topics") -> list[bytes]:
    topics = message.get(field, [])
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        raise CommandError(f"'{field}' must be a list of strings")
    return [t.encode("utf-8") for t in topics]


def _since(message: dict[str, Any]) -> float:
    since = message.get("since")
    if not isinstance(since, (int, float)) or isinstance(since, bool):
        raise CommandError("'since' must be a Unix time in seconds")
    return float(since)


# autobahn's own bases disagree on the types of ``peer`` and its private transport details;
# mypy reports that on every class that mixes another base in.
class PushProtocol(SeesTLSLayer, WebSocketServerProtocol):  # type: ignore[misc]
    factory: PushFactory
    transport: IStreamTransport
    client: PushSubscriber | None = None

    def onConnect(self, request: ConnectionRequest) -> None:
        factory = self.factory
        peer = self.transport.getPeer()
        try:
            displaced = factory.admission.admit(self, getattr(peer, "host", None), factory.clock.seconds())
        except Refused as e:
            factory.rejected += 1
            factory.rejected_per_ip += e.per_address
            raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, f"{e} (WebSocket)") from None
        if displaced is not None:
            factory.evicted += 1
            displaced.dropConnection(abort=True)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.factory.admission.leave(self)

    def onOpen(self) -> None:
        router = self.factory.router
        peer = self.transport.getPeer()
        name = f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')} (websocket)"
        self.client = PushSubscriber(router.new_id(), name, router.now(), self, self.factory.max_queue_bytes)
        router.connect(self.client)
        self.transport.registerProducer(self.client, True)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N803 - autobahn's name
        if self.client is None:
            return
        if isBinary:
            try:
                records = wire.parse_publish(payload)
            except wire.WireError as e:
                self._answer({"ok": False, "op": "publish", "error": str(e)})
                return
            self.factory.router.publish(self.client, records)
            self.factory.router.flush()
            self._answer({"ok": True, "op": "publish", "records": len(records)})
            return
        try:
            message = jsonlimits.loads(payload, strict=True)
            if not isinstance(message, dict):
                raise CommandError("a command is a JSON object")
            answer = self._command(message)
            self.factory.router.flush()
            found = answer.get("found")
            if isinstance(found, Pending):  # a proxy's upstream replay: answered when it is in
                found.then(lambda found: self._answer({**answer, "found": found}))
            else:
                self._answer(answer)
            self.factory.admission.commanded(self, self.factory.clock.seconds())
        except JSONLimitError as e:
            self._answer({"ok": False, "error": f"the command {e}"})
        except (ValueError, CommandError, OverLimit) as e:
            self._answer({"ok": False, "error": str(e)[:300]})

    def _command(self, message: dict[str, Any]) -> dict[str, Any]:
        router = self.factory.router
        client = self.client
        assert client is not None
        op = message.get("op")
        answer: dict[str, Any] = {"ok": True, "op": op}
        if "id" in message:
            answer["id"] = message["id"]
        if op == "subscribe":
            answer["found"] = router.subscribe(client, _topics(message))
        elif op == "unsubscribe":
            router.unsubscribe(client, _topics(message))
        elif op == "publish":
            data = message.get("payload")
            if not isinstance(data, str):
                raise CommandError("'payload' must be a string")
            router.publish(client, [(_topics(message), data.encode("utf-8"))])
        elif op == "register":
            waiting = router.register(client)
            if waiting is not None:  # a proxy fetches its upstream's position: answer after it
                registered: Pending[bool] = Pending()
                waiting.then(lambda _: registered.resolve(True))
                answer["found"] = registered
        elif op == "retro_subscribe":
            answer["found"] = router.retro_subscribe(client, _since(message), _topics(message))
        elif op == "psubscribe":
            answer["found"] = router.psubscribe(client, _topics(message, "patterns"))
        elif op == "punsubscribe":
            router.punsubscribe(client, _topics(message, "patterns"))
        elif op == "retro_psubscribe":
            answer["found"] = router.retro_psubscribe(client, _since(message), _topics(message, "patterns"))
        else:
            raise CommandError(f"unknown op {op!r}")
        return answer

    def _answer(self, answer: dict[str, Any]) -> None:
        if self.client is None:  # closed while a proxy's upstream replay was awaited
            return
        self.sendMessage(json.dumps(answer).encode("utf-8"), isBinary=False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N803
        if self.client is not None:
            self.client.cancel()
            self.factory.router.disconnect(self.client)
            self.client = None


class PushFactory(WebSocketServerFactory):
    # autobahn's factories are not generic in their protocol, so Twisted's Factory[P] cannot
    # see that PushProtocol's factory is this class.
    protocol = PushProtocol  # type: ignore[assignment]

    def __init__(
        self,
        router: Router,
        clock: IReactorTime,
        max_queue_bytes: int,
        max_message: int,
        max_clients: int = 1000,
        ping_interval: float = 30.0,
        ping_timeout: float = 10.0,
        max_clients_per_ip: int = 0,
    ) -> None:
        super().__init__()
        self.router = router
        self.clock = clock
        self.max_queue_bytes = max_queue_bytes
        self.max_clients = max_clients
        # A push client is silent by nature once subscribed: only one that never sent a
        # command makes room for a newcomer (evict_idle_after 0).
        self.admission: Admission[PushProtocol] = Admission(max_clients, max_clients_per_ip, 0, "websocket")
        self.rejected = 0
        self.rejected_per_ip = 0
        self.evicted = 0
        self.setProtocolOptions(
            maxMessagePayloadSize=max_message,
            maxFramePayloadSize=max_message,
            autoPingInterval=ping_interval,
            autoPingTimeout=ping_timeout,
        )
        self.noisy = False
