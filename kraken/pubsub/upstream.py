"""A proxy node's link to its upstream kraken-pubsub node, without I/O.

The link is one memcached-protocol client of the upstream node standing for every local
client: it subscribes upstream to each topic (and pattern) that has at least one local
subscriber, and unsubscribes when the last one leaves (the local router counts them); it
forwards what local clients publish; and it polls ``get messages`` and publishes what arrives
into the local router, which fans it out. The upstream node never sends a client its own
records, so nothing forwarded comes back; records from upstream are not forwarded again.

Commands made in one reactor turn leave together, consecutive commands of one kind merged
into one (one ``set publish`` carrying every record forwarded in that turn). A poll is sent
again at once after a reply with records, else after ``poll_interval``.

On a new connection (:meth:`attach`, also after a failover to another upstream node) the
link subscribes to everything the local clients hold. Records forwarded while no upstream
is connected wait, up to ``max_pending_bytes`` (oldest dropped), and leave on the next one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from kraken.pubsub import wire
from kraken.pubsub.router import Router
from kraken.pubsub.subscriber import Subscriber

log = Logger(namespace="kraken.pubsub.upstream")

SUBSCRIBE_CHUNK = 1000  # topics per subscribe command, under any upstream node's limit
PUBLISH_CHUNK = 512 * 1024  # bytes of records per publish command, under max_value_bytes


class UpstreamPublisher(Subscriber):
    """Stands for the upstream node as the publisher of what the link receives; holds no
    subscription, so it is never delivered to."""

    kind = "upstream"

    def deliver(self, records: bytes, count: int = 1) -> None:
        pass


class UpstreamLink:
    def __init__(
        self,
        router: Router,
        clock: IReactorTime,
        poll_interval: float = 0.01,
        max_pending_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.router = router
        self.clock = clock
        self.poll_interval = poll_interval
        self.max_pending_bytes = max_pending_bytes
        self.publisher: Subscriber = UpstreamPublisher(router.new_id(), "upstream", router.now())
        self.peer: str | None = None
        self._send: Callable[[bytes], object] | None = None
        self._parser = wire.ReplyParser()
        self._ops: list[tuple[bytes, bytes]] = []  # (command key, topic/pattern/record) in order
        self._pending_records: deque[bytes] = deque()  # forwarded while disconnected
        self._pending_bytes = 0
        self._expect: deque[bytes] = deque()  # keys of commands awaiting a reply
        self._flush_call: IDelayedCall | None = None
        self._poll_call: IDelayedCall | None = None
        self._polling = False
        self.connected_at: float | None = None
        self.last_records_at: float | None = None
        self.poll_sent_at: float | None = None
        self.records_in = 0
        self.records_out = 0
        self.dropped = 0
        self.errors = 0
        self.connections = 0
        router.upstream = self

    # --- the connection --------------------------------------------------------------------

    def attach(self, send: Callable[[bytes], object], peer: str = "") -> None:
        """A connection to an upstream node is up: subscribe to everything local clients hold,
        send what waited, start polling."""
        self._send = send
        self.peer = peer
        self.connections += 1
        self.connected_at = self.clock.seconds()
        self._parser = wire.ReplyParser()
        self._expect.clear()
        self._polling = False
        self._ops = [(b"subscribe", t) for t in self.router.subscribers] + [
            (b"psubscribe", p) for p in self.router.patterns.holders
        ]
        while self._pending_records:
            self._ops.append((b"publish", self._pending_records.popleft()))
        self._pending_bytes = 0
        log.info("upstream link to {peer} is up", peer=peer)
        self.flush()
        self.poll()

    def detach(self) -> None:
        """The connection is gone; commands not yet answered are forgotten."""
        if self._send is None:
            return
        log.warn("upstream link to {peer} is down", peer=self.peer)
        self._send = None
        self.peer = None
        self.connected_at = None
        self._expect.clear()
        self._polling = False
        for call in (self._poll_call, self._flush_call):
            if call is not None and call.active():
                call.cancel()
        self._poll_call = self._flush_call = None
        for key, item in self._ops:
            if key == b"publish":
                self._keep(item)
        self._ops = []

    @property
    def connected(self) -> bool:
        return self._send is not None

    # --- from the local router -------------------------------------------------------------

    def topic_added(self, topic: bytes) -> None:
        self._op(b"subscribe", topic)

    def topic_removed(self, topic: bytes) -> None:
        self._op(b"unsubscribe", topic)

    def pattern_added(self, pattern: bytes) -> None:
        self._op(b"psubscribe", pattern)

    def pattern_removed(self, pattern: bytes) -> None:
        self._op(b"punsubscribe", pattern)

    def forward(self, record: bytes) -> None:
        self.records_out += 1
        if self._send is None:
            self._keep(record)
            return
        self._op(b"publish", record)

    def _keep(self, record: bytes) -> None:
        self._pending_records.append(record)
        self._pending_bytes += len(record)
        while self._pending_bytes > self.max_pending_bytes and self._pending_records:
            self._pending_bytes -= len(self._pending_records.popleft())
            self.dropped += 1

    def _op(self, key: bytes, item: bytes) -> None:
        if self._send is None:
            return  # attach() subscribes to whatever is held then
        self._ops.append((key, item))
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)

    # --- to the upstream node --------------------------------------------------------------

    def flush(self) -> None:
        """Send the commands gathered so far, consecutive ones of a kind merged; start polling
        if nothing is polling."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        ops, self._ops = self._ops, []
        if self._send is None:
            return
        if ops:
            self._send(b"".join(self._commands(ops)))
        if not self._polling:
            self.poll()

    def _commands(self, ops: list[tuple[bytes, bytes]]) -> list[bytes]:
        out: list[bytes] = []
        i = 0
        while i < len(ops):
            key = ops[i][0]
            j = i + 1
            if key == b"publish":
                size = len(ops[i][1])
                while j < len(ops) and ops[j][0] == key and size + len(ops[j][1]) <= PUBLISH_CHUNK:
                    size += len(ops[j][1])
                    j += 1
            else:
                while j < len(ops) and j - i < SUBSCRIBE_CHUNK and ops[j][0] == key:
                    j += 1
            items = [item for _, item in ops[i:j]]
            data = b"".join(items) if key == b"publish" else b" ".join(items)
            out.append(wire.set_command(key, data))
            self._expect.append(key)
            i = j
        return out

    def poll(self) -> None:
        """Ask for queued records, unless a poll is out or nothing is subscribed."""
        if self._poll_call is not None and self._poll_call.active():
            self._poll_call.cancel()
        self._poll_call = None
        if self._send is None or self._polling:
            return
        if not self.router.subscribers and not self.router.patterns.holders:
            return
        self._polling = True
        if self._ops:
            self.flush()
        self.poll_sent_at = self.clock.seconds()
        self._expect.append(b"get")
        self._send(wire.get_command())

    def receive(self, data: bytes) -> None:
        """Bytes from the upstream node."""
        try:
            replies = self._parser.feed(data)
        except wire.WireError as e:
            log.error("upstream {peer} sent a bad reply ({e}); dropping the link", peer=self.peer, e=e)
            raise
        for reply in replies:
            key = self._expect.popleft() if self._expect else b"?"
            if key == b"get":
                self._polled(reply)
            elif reply.kind not in ("STORED", "NOT_FOUND"):
                self.errors += 1
                log.warn(
                    "upstream {peer} refused {key}: {kind} {text}",
                    peer=self.peer,
                    key=key.decode(),
                    kind=reply.kind,
                    text=reply.text[:200].decode("utf-8", "replace"),
                )

    def _polled(self, reply: wire.Reply) -> None:
        self._polling = False
        if reply.kind == "VALUE":
            records = reply.records()
            self.records_in += len(records)
            self.last_records_at = self.clock.seconds()
            self.router.publish(self.publisher, records)
            self.router.flush()
            self._poll_call = self.clock.callLater(0, self.poll)
        else:
            self._poll_call = self.clock.callLater(self.poll_interval, self.poll)

    # --- inspection --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self.clock.seconds()
        return {
            "peer": self.peer,
            "connected": self.connected,
            "connections": self.connections,
            "connected_for": None if self.connected_at is None else now - self.connected_at,
            "topics": len(self.router.subscribers),
            "patterns": len(self.router.patterns),
            "records_in": self.records_in,
            "records_out": self.records_out,
            "waiting_records": len(self._pending_records),
            "dropped_records": self.dropped,
            "refused_commands": self.errors,
            # how long the poll now out has been waiting: the link's lag behind upstream
            "lag": now - self.poll_sent_at if self._polling and self.poll_sent_at is not None else 0.0,
        }
