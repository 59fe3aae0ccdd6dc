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

from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from kraken.pubsub import wire
from kraken.pubsub.patterns import compile_pattern, matches
from kraken.pubsub.router import Pending, Router, Since
from kraken.pubsub.subscriber import Subscriber

log = Logger(namespace="kraken.pubsub.upstream")

SUBSCRIBE_CHUNK = 1000  # topics per subscribe command, under any upstream node's limit
PUBLISH_CHUNK = 512 * 1024  # bytes of records per publish command, under max_value_bytes


class UpstreamPublisher(Subscriber):
    """Stands for the upstream node as the publisher of what the link receives; holds no
    subscription, so it is never delivered to."""

    kind = "upstream"

    def __init__(self, ident: int, name: str, now: float) -> None:
        super().__init__(ident, name, now)
        self.no_forward = True

    def deliver(self, records: bytes, count: int = 1) -> None:
        pass


class RecentRecords:
    """What came from (or went to) the upstream node lately: after a failover the new upstream
    replays from a little before the last contact with the old one, and a replayed record that
    already arrived is dropped, counting (topic, payload) pairs. The blocks of records are kept
    as they came (one append each) and counted only when a failover needs it."""

    def __init__(self, window: float, max_bytes: int) -> None:
        self.window = window
        self.max_bytes = max_bytes
        self.size = 0
        self._blocks: deque[tuple[float, bytes]] = deque()
        self._counts: Counter[tuple[bytes, bytes]] | None = None

    def add_block(self, now: float, block: bytes) -> None:
        """*block*: MESSAGE records, as a publish body or a ``get messages`` reply holds them."""
        blocks = self._blocks
        blocks.append((now, block))
        self.size += len(block)
        while blocks and (blocks[0][0] < now - self.window or self.size > self.max_bytes):
            self.size -= len(blocks.popleft()[1])
        if self._counts is not None:
            self._count(block)

    def add(self, now: float, topics: Iterable[bytes], payload: bytes) -> None:
        self.add_block(now, wire.record(list(topics), payload))

    def _count(self, block: bytes) -> None:
        counts = self._counts
        assert counts is not None
        for topics, payload in wire.parse_publish(block):
            for name in set(topics):
                counts[(name, payload)] += 1

    def take(self, topics: Iterable[bytes], payload: bytes) -> bool:
        """Whether a record naming *topics* with *payload* arrived already (counted once)."""
        if self._counts is None:
            self._counts = Counter()
            for _, block in self._blocks:
                self._count(block)
        names = set(topics)
        counts = self._counts
        if not names or not all(counts.get((n, payload), 0) > 0 for n in names):
            return False
        for name in names:
            key = (name, payload)
            counts[key] -= 1
            if not counts[key]:
                del counts[key]
        return True

    def settled(self) -> None:
        """The replay is over: forget the counts (they are rebuilt for the next failover)."""
        self._counts = None


class _Replay:
    """One replay asked of the upstream node: for topics (or patterns) held by no local client,
    or after a failover (``resume``) for everything held."""

    def __init__(self, names: list[bytes], patterns: bool, resume: bool = False) -> None:
        self.names = names
        self.patterns = patterns
        self.resume = resume
        self.pending: Pending[bool] = Pending()
        self.found = False
        self._compiled = [compile_pattern(n) for n in names] if patterns else []

    def covers(self, topics: list[bytes]) -> bool:
        """Whether a record naming *topics* can only be part of this replay."""
        if self.resume:
            return False
        if self.patterns:
            return all(any(matches(c, t) for c in self._compiled) for t in topics)
        return all(t in self.names for t in topics)


class _Position:
    """A ``get position`` asked of the upstream node."""

    def __init__(self) -> None:
        self.pending: Pending[bytes | None] = Pending()


Waiter = _Replay | _Position

REPLAY_KEYS = {False: b"retro_subscribe", True: b"retro_psubscribe"}


class UpstreamLink:
    def __init__(
        self,
        router: Router,
        clock: IReactorTime,
        poll_interval: float = 0.01,
        max_pending_bytes: int = 64 * 1024 * 1024,
        failover_window: float = 60.0,
        clock_margin: float = 2.0,
        hello: bytes = b"proxy",
    ) -> None:
        """*hello*: what the link says first, ``proxy`` (records in full) or ``peer`` (a
        cluster node's link; see :mod:`kraken.pubsub.cluster`). Make the link the router's
        ``upstream`` to hear from it (a cluster's links hear from the cluster)."""
        self.hello = hello
        self.router = router
        self.clock = clock
        self.poll_interval = poll_interval
        self.max_pending_bytes = max_pending_bytes
        self.publisher: Subscriber = UpstreamPublisher(router.new_id(), "upstream", router.now())
        self.peer: str | None = None
        self._send: Callable[[bytes], object] | None = None
        self._parser = wire.ReplyParser()
        # (command key, topic/pattern/record or replay data, the replay) in order
        self._ops: list[tuple[bytes, bytes, Waiter | None]] = []
        self._pending_records: deque[bytes] = deque()  # forwarded while disconnected
        self._pending_bytes = 0
        self._expect: deque[tuple[bytes, list[bytes], Waiter | None]] = deque()  # awaiting a reply
        # since when each topic / pattern has been held upstream without a break: this node's
        # retained stream has every record of it since then
        # (Unix time, local position) of the moment each became held
        self.held_since: dict[bytes, tuple[float, int]] = {}
        self.pattern_held_since: dict[bytes, tuple[float, int]] = {}
        self._flush_call: IDelayedCall | None = None
        self._poll_call: IDelayedCall | None = None
        self._gets_out = 0
        self.connected_at: float | None = None
        self.last_records_at: float | None = None
        self.poll_sent_at: float | None = None
        self.records_in = 0
        self.records_out = 0
        self.dropped = 0
        self.errors = 0
        self.connections = 0
        # failover: the new upstream replays from clock_margin before the last contact
        self.last_contact: float | None = None
        self.asked_at = 0.0  # when the upstream last went from nothing asked to a question
        self.clock_margin = clock_margin
        self.recent = RecentRecords(failover_window, max_pending_bytes)
        self.resumed = 0
        self.resume_gaps = 0

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
        self._gets_out = 0
        self._ops = [(self.hello, b"", None)]  # proxy: records in full, for this node's replays
        if self.last_contact is None:
            self._ops += [(b"subscribe", t, None) for t in self.router.held_topics]
            self._ops += [(b"psubscribe", p, None) for p in self.router.held_patterns]
        else:
            self._resume(self.last_contact - self.clock_margin)
        while self._pending_records:
            self._ops.append((b"publish", self._pending_records.popleft(), None))
        self._pending_bytes = 0
        log.info("upstream link to {peer} is up", peer=peer)
        self.flush()
        self.poll()

    def _resume(self, since: float) -> None:
        """After a failover: subscribe to everything held with a replay from *since*; what
        arrived from the old upstream is dropped from it (:class:`RecentRecords`)."""
        held = ((False, list(self.router.held_topics)), (True, list(self.router.held_patterns)))
        for patterns, names in held:
            key = REPLAY_KEYS[patterns]
            for i in range(0, len(names), SUBSCRIBE_CHUNK):
                chunk = names[i : i + SUBSCRIBE_CHUNK]
                replay = _Replay(chunk, patterns, resume=True)
                self._ops.append((key, b"%.6f\r\n%s" % (since, b" ".join(chunk)), replay))
        self.resumed += 1

    def detach(self) -> None:
        """The connection is gone; commands not yet answered are forgotten."""
        if self._send is None:
            return
        log.warn("upstream link to {peer} is down", peer=self.peer)
        self._send = None
        self.peer = None
        self.connected_at = None
        replays = [r for _, _, r in self._expect if r is not None] + [r for _, _, r in self._ops if r]
        self._expect.clear()
        self._gets_out = 0
        self.held_since.clear()
        self.pattern_held_since.clear()
        for call in (self._poll_call, self._flush_call):
            if call is not None and call.active():
                call.cancel()
        self._poll_call = self._flush_call = None
        for key, item, _ in self._ops:
            if key == b"publish":
                self._keep(item)
        self._ops = []
        for waiter in replays:
            if isinstance(waiter, _Replay):
                waiter.pending.resolve(False)
            else:
                waiter.pending.resolve(None)

    @property
    def connected(self) -> bool:
        return self._send is not None

    # --- from the local router -------------------------------------------------------------

    def topic_added(self, topic: bytes) -> None:
        self._op(b"subscribe", topic)

    def topic_removed(self, topic: bytes) -> None:
        self.held_since.pop(topic, None)
        self._op(b"unsubscribe", topic)

    def pattern_added(self, pattern: bytes) -> None:
        self._op(b"psubscribe", pattern)

    def pattern_removed(self, pattern: bytes) -> None:
        self.pattern_held_since.pop(pattern, None)
        self._op(b"punsubscribe", pattern)

    def forward(self, record: bytes, publisher: Subscriber | None = None) -> None:
        self.records_out += 1
        if self.last_contact is not None:
            self.recent.add_block(self.clock.seconds(), record)
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

    def replay(self, names: list[bytes], since: Since, patterns: bool) -> Pending[bool]:
        replay = _Replay(names, patterns)
        if self._send is None:
            replay.pending.resolve(False)  # attach() subscribes to them, without a replay
            return replay.pending
        horizon = b"@" + since if isinstance(since, bytes) else b"%.6f" % since
        self._op(REPLAY_KEYS[patterns], horizon + b"\r\n" + b" ".join(names), replay)
        return replay.pending

    def position(self) -> Pending[bytes | None]:
        waiter = _Position()
        if self._send is None:
            waiter.pending.resolve(None)
        else:
            self._op(b"position", b"", waiter)
        return waiter.pending

    def _op(self, key: bytes, item: bytes, replay: Waiter | None = None) -> None:
        if self._send is None:
            return  # attach() subscribes to whatever is held then
        self._ops.append((key, item, replay))
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
            if not self._expect:
                self.asked_at = self.clock.seconds()
            self._send(b"".join(self._commands(ops)))
        if not self._polling:
            self.poll()

    def _commands(self, ops: list[tuple[bytes, bytes, Waiter | None]]) -> list[bytes]:
        out: list[bytes] = []
        i = 0
        while i < len(ops):
            key, data, replay = ops[i]
            if isinstance(replay, _Position):
                out.append(wire.get_command(b"position"))
                self._expect.append((key, [], replay))
                i += 1
                continue
            if replay is not None:
                # the replay, then at once a get that drains it
                out.append(wire.set_command(key, data) + wire.get_command())
                self._expect.append((key, [], replay))
                self._expect.append((b"fill", [], replay))
                i += 1
                continue
            j = i + 1
            if key == b"publish":
                size = len(ops[i][1])
                while j < len(ops) and ops[j][0] == key and size + len(ops[j][1]) <= PUBLISH_CHUNK:
                    size += len(ops[j][1])
                    j += 1
            else:
                while j < len(ops) and j - i < SUBSCRIBE_CHUNK and ops[j][0] == key:
                    j += 1
            items = [item for _, item, _ in ops[i:j]]
            if key == b"publish":
                out.append(wire.set_command(key, b"".join(items)))
                items = []
            else:
                out.append(wire.set_command(key, b" ".join(items)))
            self._expect.append((key, items, None))
            i = j
        return out

    @property
    def _polling(self) -> bool:
        return self._gets_out > 0

    def poll(self, depth: int = 1) -> None:
        """Ask for queued records until *depth* polls are out (while records flow, two: the
        next answer is on its way while this one is fanned out); not while nothing is held."""
        if self._poll_call is not None and self._poll_call.active():
            self._poll_call.cancel()
        self._poll_call = None
        if self._send is None or self._gets_out >= depth:
            return
        if not self.router.held_topics and not self.router.held_patterns:
            return
        more = depth - self._gets_out
        self._gets_out = depth
        if self._ops:
            self.flush()
        self.poll_sent_at = self.clock.seconds()
        if not self._expect:
            self.asked_at = self.poll_sent_at
        for _ in range(more):
            self._expect.append((b"get", [], None))
        self._send(wire.get_command() * more)

    def receive(self, data: bytes) -> None:
        """Bytes from the upstream node."""
        try:
            replies = self._parser.feed(data)
        except wire.WireError as e:
            log.error("upstream {peer} sent a bad reply ({e}); dropping the link", peer=self.peer, e=e)
            raise
        if replies:
            self.last_contact = self.clock.seconds()
        for reply in replies:
            key, items, replay = self._expect.popleft() if self._expect else (b"?", [], None)
            if key == b"get":
                self._polled(reply)
            elif isinstance(replay, _Position):
                token = reply.text.rstrip(b"\r\n") if reply.kind == "VALUE" else None
                replay.pending.resolve(token)
            elif isinstance(replay, _Replay) and key == b"fill":
                self._filled(replay, reply)
            elif isinstance(replay, _Replay) and reply.kind in ("STORED", "NOT_FOUND"):
                replay.found = reply.kind == "STORED"
            elif reply.kind in ("STORED", "NOT_FOUND"):
                self._held(key, items)
            else:
                self.errors += 1
                log.warn(
                    "upstream {peer} refused {key}: {kind} {text}",
                    peer=self.peer,
                    key=key.decode(),
                    kind=reply.kind,
                    text=reply.text[:200].decode("utf-8", "replace"),
                )

    def _held(self, key: bytes, items: list[bytes]) -> None:
        """A subscribe or psubscribe took effect upstream (unsubscribes end a holding when
        they are sent)."""
        if key in (b"subscribe", b"psubscribe"):
            held = self.pattern_held_since if key == b"psubscribe" else self.held_since
            holders = self.router.held_patterns if key == b"psubscribe" else self.router.held_topics
            now = (self.clock.seconds(), self.router.seq)
            for item in items:
                if item in holders:
                    held.setdefault(item, now)

    def _filled(self, replay: _Replay, reply: wire.Reply) -> None:
        """The records of a replay (and any that came live since the last poll) are here:
        fan them out, keeping for this node's own replays only the live ones."""
        if reply.kind == "VALUE":
            records = reply.records()
            self.records_in += len(records)
            for topics, payload in records:
                if replay.resume and self.recent.take(topics, payload):
                    continue
                self.router.publish(self.publisher, [(topics, payload)], retain=not replay.covers(topics))
            self.router.flush()
            self.recent.settled()
            self.recent.add_block(self.clock.seconds(), reply.text)
        if replay.resume and not replay.found:
            self.resume_gaps += 1
            log.warn(
                "upstream {peer} cannot replay everything since the last contact with the previous "
                "upstream: records published meanwhile may be missing",
                peer=self.peer,
            )
        held = self.pattern_held_since if replay.patterns else self.held_since
        holders = self.router.held_patterns if replay.patterns else self.router.held_topics
        since = (self.clock.seconds(), self.router.seq)
        for name in replay.names:
            if name in holders:
                held.setdefault(name, since)
        replay.pending.resolve(replay.found)

    def keepalive(self) -> None:
        """Ask something when nothing is asked, so that :meth:`silent_for` keeps meaning."""
        if self._send is not None and not self._expect and not self._ops:
            self.position()

    def silent_for(self) -> float:
        """Seconds the upstream has left a question unanswered (0 when nothing is asked)."""
        if self._send is None or not self._expect:
            return 0.0
        since = max(self.last_contact or 0.0, self.connected_at or 0.0, self.asked_at)
        return self.clock.seconds() - since

    def delivers(self, publisher: Subscriber | None, shard: int) -> bool:
        return True

    def covers(self, names: Iterable[bytes], seq: int | None, time: float | None, patterns: bool) -> bool:
        held = self.pattern_held_since if patterns else self.held_since
        for name in names:
            since = held.get(name)
            if since is None:
                return False
            if (since[0] > time) if time is not None else (seq is None or since[1] > seq):
                return False
        return True

    def _polled(self, reply: wire.Reply) -> None:
        self._gets_out -= 1
        if reply.kind == "VALUE":
            self.poll(depth=2)
            records = reply.records()
            self.records_in += len(records)
            self.last_records_at = now = self.clock.seconds()
            self.recent.add_block(now, reply.text)
            self.router.publish(self.publisher, records)
            self.router.flush()
        elif not self._gets_out:
            self._poll_call = self.clock.callLater(self.poll_interval, self.poll)

    # --- inspection --------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self.clock.seconds()
        return {
            "peer": self.peer,
            "connected": self.connected,
            "connections": self.connections,
            "connected_for": None if self.connected_at is None else now - self.connected_at,
            "topics": len(self.router.held_topics),
            "patterns": len(self.router.patterns),
            "records_in": self.records_in,
            "records_out": self.records_out,
            "waiting_records": len(self._pending_records),
            "dropped_records": self.dropped,
            "refused_commands": self.errors,
            "failovers_resumed": self.resumed,
            "failovers_not_found": self.resume_gaps,
            # how long the poll now out has been waiting: the link's lag behind upstream
            "lag": now - self.poll_sent_at if self._polling and self.poll_sent_at is not None else 0.0,
        }
