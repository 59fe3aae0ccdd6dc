"""A kraken-pubsub topic subscription feeding a pipeline, as a pub/sub client.

The loop: connect (mutual TLS when configured, the server must present the ``pubsub``
role), ``retro_subscribe`` from the checkpoint, then ``get messages`` again and again,
handing each batch to the trigger's delivery and waiting until it is done (results there,
a durable pipeline's journal committed) before polling again. After each poll the checkpoint
moves to the poll's start minus a margin: everything published before it has been handled.
The checkpoint is kept (SQLite), so after a restart — ours or a lost connection — the
retroactive subscription replays what was published since, and no message is lost; some may
come twice, which a durable pipeline with an idempotency key absorbs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from kraken.pipeline.answers import BadBody, TooLarge, encode, parse_body
from kraken.pubsub.client import PubSubClient

log = Logger(namespace="kraken.pipeline.triggers.pubsub")

POLL_IDLE = 0.05
RECONNECT = 1.0
CHECKPOINT_MARGIN = 1.0  # seconds of clock difference between us and the pub/sub server
SAVE_EVERY = 1.0

Connector = Callable[[], "defer.Deferred[PubSubClient]"]


def result_record(value: Any) -> bytes:
    """A result as a message: its JSON; one over the answer limits becomes a ``:limit`` error
    (a result we cannot publish must not stop its topic)."""
    try:
        return encode(value)
    except TooLarge as e:
        return encode({"error": ":limit", "details": {"limit": e.limit, "message": str(e)}})


def record_event(topics: list[bytes], payload: bytes) -> Any:
    """A message as an event: its JSON object (within the API's depth limit), else
    ``{"topic", "payload"}`` (text). Never raises: one bad message must not stop a topic."""
    try:
        value = parse_body(payload)
    except BadBody:
        value = None
    if isinstance(value, dict):
        return value
    return {"topic": topics[0].decode("utf-8", "replace") if topics else None,
            "payload": payload.decode("utf-8", "replace")}


class PubSubSource:
    def __init__(
        self,
        name: str,
        topics: list[str],
        connect: Connector,
        deliver: Callable[[list[Any]], defer.Deferred[Any]],
        clock: IReactorTime,
        checkpoint: float,
        save: Callable[[float], None],
    ) -> None:
        self.name = name
        self.topics = [t.encode() for t in topics]
        self.connect = connect
        self.deliver = deliver
        self.clock = clock
        self.checkpoint = checkpoint
        self.save = save
        self.saved_at = 0.0
        self.running = False
        self.client: PubSubClient | None = None
        self.received = 0
        self.gaps = 0
        self.errors = 0
        self.loop: defer.Deferred[None] | None = None

    def start(self) -> None:
        self.running = True
        self.loop = self._run()

    def stop(self) -> None:
        self.running = False
        if self.client is not None and self.client.transport is not None:
            self.client.transport.loseConnection()

    def publish(self, topic: str, values: list[Any]) -> defer.Deferred[bool]:
        if self.client is None:
            return defer.fail(ConnectionError("not connected to kraken-pubsub"))
        return self.client.publish([([topic.encode()], result_record(v)) for v in values])

    def status(self) -> dict[str, Any]:
        return {
            "connected": self.client is not None,
            "received": self.received,
            "checkpoint": self.checkpoint,
            "gaps": self.gaps,
            "errors": self.errors,
        }

    @defer.inlineCallbacks
    def _run(self) -> Any:
        while self.running:
            try:
                client = yield self.connect()
                if not self.running:
                    client.transport.loseConnection()
                    return
                found = yield client.retro_subscribe(self.checkpoint, self.topics)
                if not found:
                    self.gaps += 1
                    log.warn(
                        "trigger {name}: kraken-pubsub no longer holds everything published since the "
                        "checkpoint {at}: messages may have been missed",
                        name=self.name, at=self.checkpoint,
                    )
                self.client = client
                log.info("trigger {name} subscribed to {topics}", name=self.name,
                         topics=b" ".join(self.topics).decode())
                while self.running:
                    polled_at = self.clock.seconds()
                    records = yield client.messages()
                    if records:
                        self.received += len(records)
                        yield self.deliver([record_event(list(t), p) for t, p in records])
                    self._advance(polled_at - CHECKPOINT_MARGIN)
                    if not records:
                        yield task.deferLater(self.clock, POLL_IDLE, lambda: None)
            except Exception as e:
                self.client = None
                if not self.running:
                    return
                self.errors += 1
                log.warn("trigger {name}: {error}; again in {s} s", name=self.name, error=str(e) or repr(e),
                         s=RECONNECT)
                yield task.deferLater(self.clock, RECONNECT, lambda: None)
        self.client = None

    def _advance(self, at: float) -> None:
        if at <= self.checkpoint:
            return
        self.checkpoint = at
        if at - self.saved_at >= SAVE_EVERY:
            self.saved_at = at
            self.save(at)
