"""Topics, subscriptions and fan-out: the pub/sub core every front end shares.

Topics belong to ``shards`` router shards by ``erlang:phash2``; a published record reaches a
subscriber as one ``MESSAGE`` record per shard, naming the matched topics of that shard in
publish order (repeats kept), shards in ascending order — the original server's bytes.
The router is single-threaded: subscribe, publish and replay are atomic with respect to each
other, and time comes from an injected clock.

Consecutive single-topic records from one publisher to one topic form a *run*: they are
serialised once and handed to each subscriber as one shared chunk when the run ends. A front
end calls :meth:`Router.flush` after each batch of input it handled (one ``dataReceived``);
every other router operation flushes first, so ordering is never affected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from kraken.pubsub import wire
from kraken.pubsub.patterns import BadPattern, PatternIndex, check_pattern, compile_pattern, matches
from kraken.pubsub.phash2 import shard_of
from kraken.pubsub.retro import PAYLOAD, PUBLISHER, SEQ, SHARD, SHARED, TOPICS, Entry, RetainedShard
from kraken.pubsub.subscriber import Subscriber

log = Logger(namespace="kraken.pubsub.router")

V = TypeVar("V")


class Stats:
    """Running totals, read by the metrics collector and the admin endpoint."""

    __slots__ = (
        "delivered", "dropped_by_closed", "published", "publishes", "refused_subscribes", "replayed"
    )

    def __init__(self) -> None:
        self.dropped_by_closed = 0  # queue drops of connections that are gone
        self.publishes = 0
        self.published = 0
        self.delivered = 0
        self.replayed = 0
        # subscribe commands refused, by the limit they would have passed (OverLimit.limit)
        self.refused_subscribes: dict[str, int] = {}


class OverLimit(Exception):
    """A subscribe that would pass a subscription limit; nothing of it was subscribed.

    ``limit`` names the limit (``per_command``, ``per_connection`` or ``server``); the message
    says what was asked and what the limit is, for the client's error reply.
    """

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class SubscriptionLimits:
    """What subscriptions may hold: ~350 bytes each, so the server-wide default is ~350 MiB."""

    per_command: int = 10_000
    per_connection: int = 100_000
    server: int = 1_000_000
    patterns_per_connection: int = 1_000
    patterns: int = 100_000
    pattern_bytes: int = 1024


class Pending(Generic[V]):
    """An answer that waits for the upstream node (proxy nodes only): :meth:`then` runs its
    callback with the value once it is known (at once if it is)."""

    def __init__(self) -> None:
        self.done = False
        self.value: V | None = None
        self._then: list[Callable[[V], object]] = []

    def then(self, callback: Callable[[V], object]) -> None:
        if self.done:
            callback(self.value)  # type: ignore[arg-type]
        else:
            self._then.append(callback)

    def resolve(self, value: V) -> None:
        if self.done:
            return
        self.done, self.value = True, value
        then, self._then = self._then, []
        for callback in then:
            callback(value)


Found = bool | Pending[bool]
# A position in the published stream as ``get position`` gives it: this node's sequence
# number, and on a proxy node "/" and its upstream node's position at that moment.
Since = float | bytes


def split_position(token: bytes) -> tuple[int, int | None, bytes | None]:
    """``(this node's sequence number, its upstream connection's number, the upstream node's
    position)``, the last two ``None`` for a node without upstream; ValueError if *token* is
    not a position."""
    local, slash, rest = token.partition(b"/")
    seq, dot, generation = local.partition(b".")
    if not seq.isdigit() or (dot and not generation.isdigit()) or len(token) > 700 or (slash and not rest):
        raise ValueError(f"{token[:60]!r} is not a position")
    return int(seq), int(generation) if dot else None, rest if slash else None


class Upstream(Protocol):
    """What a proxy node's router tells its upstream link (:mod:`kraken.pubsub.upstream`):
    topics and patterns gaining their first or losing their last local subscriber, and the
    records local clients publish. Records the link itself publishes (from upstream) come
    with ``publisher`` and are not forwarded back."""

    def topic_added(self, topic: bytes) -> None: ...
    def topic_removed(self, topic: bytes) -> None: ...
    def pattern_added(self, pattern: bytes) -> None: ...
    def pattern_removed(self, pattern: bytes) -> None: ...
    def forward(self, record: bytes, publisher: Subscriber | None) -> None: ...
    def covers(self, names: Iterable[bytes], seq: int | None, time: float | None, patterns: bool) -> bool:
        """Whether every topic (or pattern) in *names* was held upstream, so that this node
        has all its records, since position *seq* (or Unix time *time*)."""
        ...
    def replay(self, names: list[bytes], since: Since, patterns: bool) -> Pending[bool]:
        """Subscribe upstream to *names*, none held yet, replaying to this node what was
        published upstream after *since* (Unix time, or the upstream's position) and never
        reached it."""
        ...
    def position(self) -> Pending[bytes | None]:
        """The upstream node's current position (``None`` while it is not connected)."""
        ...
    def delivers(self, publisher: Subscriber | None, shard: int) -> bool:
        """Whether this node delivers to the peers of its cluster a record *publisher* (one
        of its clients) published with first shard *shard* (always true outside a cluster)."""
        ...
    @property
    def connections(self) -> int:
        """How many connections upstream were made: an upstream position is only good on
        the connection that gave it."""
        ...


class Router:
    RUN_RECORDS = 64
    RUN_BYTES = 64 * 1024

    def __init__(
        self,
        clock: IReactorTime,
        shards: int = 4,
        retained_per_shard: int = 10000,
        fanout_to_warn: int = 1000,
        topics_to_warn: int = 1000,
        limits: SubscriptionLimits | None = None,
    ) -> None:
        self.clock = clock
        self.limits = limits or SubscriptionLimits()
        self.subscriptions = 0
        self.shards = shards
        self.fanout_to_warn = fanout_to_warn
        self.topics_to_warn = topics_to_warn
        self.started = clock.seconds()
        self.retained = [RetainedShard(retained_per_shard, self.started) for _ in range(shards)]
        self.subscribers: dict[bytes, dict[Subscriber, None]] = {}
        self.patterns: PatternIndex[Subscriber] = PatternIndex()
        self.pattern_subscriptions = 0
        self.clients: dict[int, Subscriber] = {}
        self.seq = 0
        self._last_time = self.started
        self._next_id = 0
        self.stats = Stats()
        self._run_topic: bytes | None = None
        self._run_publisher: Subscriber | None = None
        self._run: list[bytes] = []
        self._run_bytes = 0
        self._shard_cache: dict[bytes, int] = {}
        self.upstream: Upstream | None = None
        self.peers = 0  # connections of cluster peers (``set peer``)
        # topics and patterns held by clients other than peers, with their holder counts: what
        # the upstream link (or the cluster) subscribes to
        self.held_topics: dict[bytes, int] = {}
        self.held_patterns: dict[bytes, int] = {}

    # --- clients -------------------------------------------------------------------------

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def now(self) -> float:
        """The clock's time, never running backwards (retained entries are in time order)."""
        now = self.clock.seconds()
        if now < self._last_time:
            return self._last_time
        self._last_time = now
        return now

    def connect(self, client: Subscriber) -> None:
        self.clients[client.id] = client

    def disconnect(self, client: Subscriber) -> None:
        self.flush()
        if self.clients.pop(client.id, None) is not None:
            self.stats.dropped_by_closed += client.dropped
            self.peers -= client.peer
        self.subscriptions -= len(client.topics)
        for topic in client.topics:
            subs = self.subscribers.get(topic)
            if subs is not None:
                subs.pop(client, None)
                if not subs:
                    del self.subscribers[topic]
            self._release(client, topic, False)
        client.topics.clear()
        client.ended.clear()
        self.pattern_subscriptions -= len(client.patterns)
        for pattern in client.patterns:
            self.patterns.discard(pattern, client)
            self._release(client, pattern, True)
        client.patterns.clear()
        client.ended_patterns.clear()

    # --- subscriptions -------------------------------------------------------------------

    def subscribe(self, client: Subscriber, topics: Iterable[bytes]) -> Found:
        """Subscribe; after ``register`` also replay from the registered position.

        Returns ``False`` (reply NOT_FOUND) when the retained stream no longer reaches back to
        the position; the subscription stands either way. Raises :class:`OverLimit`, having
        changed nothing (a pending ``register`` stays pending), when a limit would be passed.
        On a proxy node a replay of topics not held upstream yet answers with a
        :class:`Pending`.
        """
        self.flush()
        topics = list(topics)
        self.check_limits(client, topics)
        horizon = client.horizon
        if horizon is None:
            self._add(client, topics)
            return True
        client.horizon = None
        up, generation = client.horizon_upstream, client.horizon_generation
        return self._subscribe_replaying(client, topics, False, horizon, upstream=up, generation=generation)

    def retro_subscribe(
        self, client: Subscriber, horizon: Since, topics: Sequence[bytes]
    ) -> Found:
        """Subscribe and replay what was published after *horizon*, Unix time or a position
        from ``get position``; limits as :meth:`subscribe`."""
        self.flush()
        self.check_limits(client, topics)
        return self._subscribe_since(client, topics, False, horizon)

    def _subscribe_since(
        self, client: Subscriber, names: Sequence[bytes], patterns: bool, horizon: Since
    ) -> Found:
        if isinstance(horizon, bytes):
            seq, generation, upstream = split_position(horizon)
            return self._subscribe_replaying(
                client, names, patterns, seq=min(seq, self.seq), upstream=upstream, generation=generation
            )
        return self._subscribe_replaying(
            client, names, patterns, time=horizon, upstream=horizon
        )

    def peer_joined(self, client: Subscriber) -> None:
        """*client* is a cluster peer's link: records reach it only from the node that
        delivers them to the cluster (:meth:`_to_peers`), and what it publishes is not
        forwarded again. (Say it before subscribing.)"""
        if not client.peer and not client.topics and not client.patterns:
            client.peer = client.no_forward = client.full_records = True
            self.peers += 1

    def register(self, client: Subscriber) -> Pending[None] | None:
        """Remember the current position: the next subscribe replays everything after it.
        A proxy node also fetches its upstream node's position (answering when it has it)."""
        self.flush()
        client.horizon = seq = self.seq
        client.horizon_upstream = None
        link = self.upstream
        if link is None:
            return None
        done: Pending[None] = Pending()

        def fetched(token: bytes | None) -> None:
            if client.horizon == seq:
                client.horizon_upstream = token
                client.horizon_generation = link.connections
            done.resolve(None)

        link.position().then(fetched)
        return done

    def position(self, client: Subscriber | None = None) -> bytes | Pending[bytes]:
        """The current position, for ``get position`` (a proxy's includes its upstream's, a
        cluster node's its peers' unless a peer asks)."""
        self.flush()
        local = b"%d" % self.seq
        link = self.upstream
        if link is None or (client is not None and client.peer):
            return local
        done: Pending[bytes] = Pending()
        link.position().then(
            lambda token: done.resolve(b"%s.%d/%s" % (local, link.connections, token) if token else local)
        )
        return done

    def unsubscribe(self, client: Subscriber, topics: Iterable[bytes]) -> None:
        self.flush()
        for topic in topics:
            since = client.topics.pop(topic, None)
            if since is None:
                continue
            client.subscription_ended(topic, since, self.seq)
            self.subscriptions -= 1
            subs = self.subscribers[topic]
            del subs[client]
            if not subs:
                del self.subscribers[topic]
            self._release(client, topic, False)
        if len(client.ended) > 1024:
            client.forget_history_before(min(r.complete_after_seq for r in self.retained))
            # Subscribe/unsubscribe churn over fresh topics must not grow the history without
            # bound either: past the per-connection limit the oldest ended topics are forgotten
            # (a later replay may then repeat records this client already had from them).
            client.forget_oldest_history(self.limits.per_connection)

    # --- pattern subscriptions ---------------------------------------------------------

    def psubscribe(self, client: Subscriber, patterns: Sequence[bytes]) -> Found:
        """Subscribe to *patterns* (:mod:`kraken.pubsub.patterns`); after ``register`` also
        replay what matched them since. :class:`BadPattern` or :class:`OverLimit` change
        nothing."""
        self.flush()
        self.check_pattern_limits(client, patterns)
        horizon = client.horizon
        if horizon is None:
            self._add_patterns(client, patterns)
            return True
        client.horizon = None
        up, generation = client.horizon_upstream, client.horizon_generation
        return self._subscribe_replaying(client, patterns, True, horizon, upstream=up, generation=generation)

    def retro_psubscribe(
        self, client: Subscriber, horizon: Since, patterns: Sequence[bytes]
    ) -> Found:
        """Subscribe to *patterns* and replay what matched them after Unix time *horizon*."""
        self.flush()
        self.check_pattern_limits(client, patterns)
        return self._subscribe_since(client, patterns, True, horizon)

    def punsubscribe(self, client: Subscriber, patterns: Iterable[bytes]) -> None:
        self.flush()
        for pattern in patterns:
            since = client.patterns.pop(pattern, None)
            if since is None:
                continue
            client.subscription_ended(pattern, since, self.seq, pattern=True)
            self.pattern_subscriptions -= 1
            self.patterns.discard(pattern, client)
            self._release(client, pattern, True)
        if len(client.ended_patterns) > 1024:
            client.forget_history_before(min(r.complete_after_seq for r in self.retained))
            client.forget_oldest_history(self.limits.per_connection, self.limits.patterns_per_connection)

    def check_pattern_limits(self, client: Subscriber, patterns: Sequence[bytes]) -> None:
        """Raise :class:`BadPattern` or :class:`OverLimit` if *patterns* cannot be subscribed."""
        limits = self.limits
        self.check_topic_count(client, len(patterns))
        if not patterns:
            raise BadPattern("psubscribe names no pattern")
        for pattern in patterns:
            check_pattern(pattern, limits.pattern_bytes)
        new = len(set(patterns).difference(client.patterns))
        if not new:
            return
        if len(client.patterns) + new > limits.patterns_per_connection:
            self._refuse(
                client,
                "patterns_per_connection",
                f"psubscribe would give this connection {len(client.patterns) + new} patterns, "
                f"over the limit of {limits.patterns_per_connection}",
            )
        if self.pattern_subscriptions + new > limits.patterns:
            why = f"the server is at its limit of {limits.patterns} patterns"
            self._refuse(client, "patterns_server", why)

    def _add_patterns(self, client: Subscriber, patterns: Iterable[bytes], announce: bool = True) -> None:
        seq = self.seq
        for pattern in patterns:
            if pattern in client.patterns:
                continue
            self.pattern_subscriptions += 1
            client.patterns[pattern] = seq
            self.patterns.add(pattern, client)
            self._hold(client, pattern, True, announce)

    def targets(self, topic: bytes) -> Iterable[Subscriber]:
        """Every subscriber of *topic*, by name or by pattern, each once."""
        exact = self.subscribers.get(topic)
        if not self.patterns.holders:
            return exact or ()
        by_pattern = self.patterns.match(topic)
        if not by_pattern:
            return exact or ()
        if not exact:
            return by_pattern
        return {**exact, **dict.fromkeys(by_pattern)}

    def check_topic_count(self, client: Subscriber, count: int) -> None:
        """Refuse a command naming more than ``limits.per_command`` topics (front ends call
        this before splitting a large data block)."""
        limit = self.limits.per_command
        if count > limit:
            why = f"subscribe names {count} topics, over the limit of {limit} per command"
            self._refuse(client, "per_command", why)

    def check_limits(self, client: Subscriber, topics: Sequence[bytes]) -> None:
        """Raise :class:`OverLimit` if subscribing *topics* would pass a limit."""
        limits = self.limits
        self.check_topic_count(client, len(topics))
        new = len(set(topics).difference(client.topics))
        if not new:
            return
        if len(client.topics) + new > limits.per_connection:
            self._refuse(
                client,
                "per_connection",
                f"subscribe would give this connection {len(client.topics) + new} subscriptions, "
                f"over the limit of {limits.per_connection}",
            )
        if self.subscriptions + new > limits.server:
            self._refuse(client, "server", f"the server is at its limit of {limits.server} subscriptions")

    def _refuse(self, client: Subscriber, limit: str, message: str) -> None:
        refused = self.stats.refused_subscribes
        refused[limit] = refused.get(limit, 0) + 1
        if not client.warned_over_limit:
            client.warned_over_limit = True
            log.warn(
                "refusing subscribe of {name} (logged once per connection): {why}",
                name=client.name,
                why=message,
            )
        raise OverLimit(limit, message)

    def _add(self, client: Subscriber, topics: Iterable[bytes], announce: bool = True) -> None:
        seq = self.seq
        for topic in topics:
            if topic in client.topics:
                continue
            self.subscriptions += 1
            client.topics[topic] = seq
            subs = self.subscribers.get(topic)
            if subs is None:
                self.subscribers[topic] = subs = {}
            subs[client] = None
            self._hold(client, topic, False, announce)

    def _hold(self, client: Subscriber, name: bytes, pattern: bool, announce: bool) -> None:
        if client.peer:
            return  # a peer holds it for its own clients, from the nodes it chose itself
        held = self.held_patterns if pattern else self.held_topics
        count = held.get(name, 0)
        held[name] = count + 1
        if not count and announce and self.upstream is not None:
            (self.upstream.pattern_added if pattern else self.upstream.topic_added)(name)

    def _release(self, client: Subscriber, name: bytes, pattern: bool) -> None:
        if client.peer:
            return
        held = self.held_patterns if pattern else self.held_topics
        count = held.pop(name, 0) - 1
        if count > 0:
            held[name] = count
        elif self.upstream is not None:
            (self.upstream.pattern_removed if pattern else self.upstream.topic_removed)(name)

    # --- publishing ----------------------------------------------------------------------

    def publish(
        self, publisher: Subscriber | None, records: Iterable[wire.Record], retain: bool = True
    ) -> None:
        """Route each record in order to every subscriber except *publisher*; keep it for
        replay unless *retain* is false (a replay a proxy received from upstream)."""
        pub_id = publisher.id if publisher is not None else 0
        now = self.now()
        stats = self.stats
        stats.publishes += 1
        upstream = self.upstream
        if publisher is not None and publisher.no_forward:
            upstream = None
        for topics, payload in records:
            self.seq += 1
            stats.published += 1
            if upstream is not None:
                upstream.forward(wire.record(topics, payload), publisher)
            if len(topics) == 1:
                self._publish_one(publisher, pub_id, now, topics[0], payload, None, retain)
            elif topics:
                self._publish_many(publisher, pub_id, now, topics, payload, retain)

    def publish_encoded(self, publisher: Subscriber, topic: bytes, payload: bytes, record: bytes) -> None:
        """Publish one one-topic record whose canonical bytes *record* the caller already has."""
        self.seq += 1
        self.stats.publishes += 1
        self.stats.published += 1
        if self.upstream is not None and not publisher.no_forward:
            self.upstream.forward(record, publisher)
        self._publish_one(publisher, publisher.id, self.now(), topic, payload, record)

    def publish_encoded_many(self, publisher: Subscriber, records: list[tuple[bytes, bytes, bytes]]) -> None:
        """:meth:`publish_encoded` for each ``(topic, payload, record)`` in order (the
        pipelined publishes of one read; they share one timestamp, as a multi-record publish
        does), with the per-record work inlined: this is the publish hot path."""
        if self.upstream is not None:
            for topic, payload, record in records:
                self.publish_encoded(publisher, topic, payload, record)
            return
        stats = self.stats
        stats.publishes += len(records)
        stats.published += len(records)
        now = self.now()
        pub_id = publisher.id
        shard_cache = self._shard_cache
        retained = self.retained
        subscribers = self.subscribers
        patterns = self.patterns
        run_records, run_limit = self.RUN_RECORDS, self.RUN_BYTES
        seq = self.seq
        run, run_bytes = self._run, self._run_bytes
        run_topic = self._run_topic if self._run_publisher is publisher else None
        kept: list[list[Entry]] = [[] for _ in retained]
        for topic, payload, record in records:
            seq += 1
            shard = shard_cache.get(topic)
            if shard is None:
                shard = self.shard(topic)
            kept[shard].append((seq, now, shard, (topic,), payload, pub_id, True))
            if topic not in subscribers and not (patterns.holders and patterns.match(topic)):
                continue
            if topic != run_topic:
                self.seq, self._run_bytes = seq, run_bytes
                self.flush()
                self._run_topic = run_topic = topic
                self._run_publisher = publisher
                run, run_bytes = self._run, 0
            run.append(record)
            run_bytes += len(record)
            if len(run) >= run_records or run_bytes >= run_limit:
                self.seq, self._run_bytes = seq, run_bytes
                self.flush()
                run, run_bytes, run_topic = self._run, 0, None
        self.seq, self._run_bytes = seq, run_bytes
        for shard_entries, new in zip(retained, kept):
            if new:
                shard_entries.extend(new)

    def shard(self, topic: bytes) -> int:
        shard = self._shard_cache.get(topic)
        if shard is None:
            if len(self._shard_cache) >= 100_000:
                self._shard_cache.clear()
            shard = self._shard_cache[topic] = shard_of(topic, self.shards)
        return shard

    def _publish_one(
        self,
        publisher: Subscriber | None,
        pub_id: int,
        now: float,
        topic: bytes,
        payload: bytes,
        data: bytes | None = None,
        retain: bool = True,
    ) -> None:
        if retain:
            shard = self._shard_cache.get(topic)
            if shard is None:
                shard = self.shard(topic)
            shared = self.upstream is None or self._to_peers(publisher, shard)
            self.retained[shard].add((self.seq, now, shard, (topic,), payload, pub_id, shared))
        if topic not in self.subscribers and not (self.patterns.holders and self.patterns.match(topic)):
            return
        if topic != self._run_topic or publisher is not self._run_publisher:
            self.flush()
            self._run_topic = topic
            self._run_publisher = publisher
        if data is None:
            data = b"MESSAGE %s %d\r\n%s\r\n" % (topic, len(payload), payload)
        self._run.append(data)
        self._run_bytes += len(data)
        if len(self._run) >= self.RUN_RECORDS or self._run_bytes >= self.RUN_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand the pending run of records to its subscribers."""
        run = self._run
        if not run:
            return
        topic, publisher = self._run_topic, self._run_publisher
        self._run = []
        self._run_bytes = 0
        self._run_topic = self._run_publisher = None
        subs = self.targets(topic)  # type: ignore[arg-type]
        if not subs:
            return
        n = len(run)
        data = run[0] if n == 1 else b"".join(run)
        count = 0
        if self.peers and not self._to_peers(publisher, self.shard(topic)):  # type: ignore[arg-type]
            for sub in subs:
                if sub is not publisher and not sub.peer:
                    sub.deliver(data, n)
                    count += 1
        else:
            for sub in subs:
                if sub is not publisher:
                    sub.deliver(data, n)
                    count += 1
        self.stats.delivered += count * n
        if count >= self.fanout_to_warn:
            self._warn_fanout(count, publisher, [topic], run[-1])  # type: ignore[list-item]

    def _publish_many(
        self,
        publisher: Subscriber | None,
        pub_id: int,
        now: float,
        topics: list[bytes],
        payload: bytes,
        retain: bool = True,
    ) -> None:
        self.flush()
        if len(topics) >= self.topics_to_warn:
            log.warn(
                "Publish topic fanout of {count}, publisher {publisher}, message {message}",
                count=len(topics),
                publisher=publisher.name if publisher else None,
                message=payload[:100],
            )
        groups: dict[int, list[bytes]] = {}
        for topic in topics:
            groups.setdefault(self.shard(topic), []).append(topic)
        skip_peers = self.upstream is not None and not self._to_peers(publisher, min(groups))
        for shard in sorted(groups):
            group = groups[shard]
            if retain:
                entry = (self.seq, now, shard, tuple(group), payload, pub_id, not skip_peers)
                self.retained[shard].add(entry)
            matched: dict[Subscriber, list[bytes]] = {}
            for topic in group:
                for sub in self.targets(topic):
                    if sub is not publisher and not (skip_peers and sub.peer):
                        matched.setdefault(sub, []).append(topic)
            if not matched:
                continue
            encoded: dict[tuple[bytes, ...], bytes] = {}
            for sub, names in matched.items():
                key = tuple(group) if sub.full_records else tuple(names)
                data = encoded.get(key)
                if data is None:
                    encoded[key] = data = wire.record(names, payload)
                sub.deliver(data)
            self.stats.delivered += len(matched)
            if len(matched) >= self.fanout_to_warn:
                self._warn_fanout(len(matched), publisher, group, payload)

    def _to_peers(self, publisher: Subscriber | None, shard: int) -> bool:
        """In a cluster, a record reaches the peers' links once, from one node: the node it
        was forwarded to, or the one it was published at if that owns its first shard."""
        if publisher is not None and publisher.no_forward:
            return publisher.peer  # forwarded by a peer: yes; from our own links: no
        return self.upstream is None or self.upstream.delivers(publisher, shard)

    def _warn_fanout(
        self, count: int, publisher: Subscriber | None, topics: list[bytes], payload: bytes
    ) -> None:
        log.warn(
            "Publish subscriber fanout of {count}, publisher {publisher}, topics {topics}, message {message}",
            count=count,
            publisher=publisher.name if publisher else None,
            topics=topics[:20],
            message=payload[:100],
        )

    # --- retroactive replay --------------------------------------------------------------

    def _subscribe_replaying(
        self,
        client: Subscriber,
        names: Sequence[bytes],
        patterns: bool,
        seq: int | None = None,
        time: float | None = None,
        upstream: Since | None = None,
        generation: int | None = None,
    ) -> Found:
        """Subscribe *client* to the topics (or *patterns*) *names* and replay what they got
        after position *seq* or Unix time *time*; *upstream*: the same point for the upstream
        node (a proxy's)."""
        add = self._add_patterns if patterns else self._add
        link = self.upstream
        if link is None or client.peer:  # a peer asks for what this node itself shared
            add(client, names)
            return self._replay(client, names, patterns, seq, time)
        # A proxy has every record of a topic held upstream since it has been held; for topics
        # held by no client here it asks upstream to subscribe and replay what never came.
        if generation is not None and generation != link.connections:
            upstream = None  # a position of an upstream connection since lost
        holders = self.held_patterns if patterns else self.held_topics
        fresh = [n for n in dict.fromkeys(names) if n not in holders]
        held = [n for n in names if n in holders]
        if not link.covers(held, seq, time, patterns) or (fresh and upstream is None):
            add(client, names)
            return self._not_held(client, seq if time is None else time)
        add(client, names, announce=False)
        # nothing was published through this node before it started: only upstream can be
        # incomplete there, and it says so
        local_time = None if time is None else max(time, self.started)
        if not self._replay(client, names, patterns, seq, local_time):
            for name in fresh:
                (link.pattern_added if patterns else link.topic_added)(name)
            return False
        if not fresh:
            return True
        assert upstream is not None
        return link.replay(fresh, upstream, patterns)

    def _replay(
        self,
        client: Subscriber,
        names: Sequence[bytes],
        patterns: bool,
        seq: int | None,
        time: float | None,
    ) -> bool:
        if not patterns:
            wanted_topics = set(names)
            shards = {self.shard(t) for t in wanted_topics}
            return self._replay_where(client, shards, wanted_topics.__contains__, seq, time)
        compiled = [compile_pattern(p) for p in set(names)]

        def wanted(topic: bytes) -> bool:
            return any(matches(tokens, topic) for tokens in compiled)

        # a pattern may match topics of every shard
        return self._replay_where(client, set(range(self.shards)), wanted, seq, time)

    def _replay_where(
        self,
        client: Subscriber,
        shards: set[int],
        wanted: Callable[[bytes], bool],
        seq: int | None,
        time: float | None,
    ) -> bool:
        for index in shards:
            kept = self.retained[index]
            if seq is not None and kept.complete_after_seq > seq:
                return self._too_old(client, seq, kept.complete_after_seq)
            if time is not None and kept.complete_after_time > time:
                return self._too_old(client, time, kept.complete_after_time)
        found: list[Entry] = []
        for index in shards:
            kept = self.retained[index]
            if seq is not None:
                found.extend(kept.newer_than_seq(wanted, seq))
            else:
                assert time is not None
                found.extend(kept.newer_than_time(wanted, time))
        for entry in sorted(found, key=lambda e: (e[SEQ], e[SHARD])):
            if entry[PUBLISHER] == client.id or client.got_live(entry[TOPICS], entry[SEQ]):
                continue
            if client.peer and not entry[SHARED]:
                continue  # the peer has it from the node that shared it
            names = [t for t in entry[TOPICS] if wanted(t)]
            client.deliver(wire.record(names, entry[PAYLOAD]))
            self.stats.replayed += 1
        return True

    def _not_held(self, client: Subscriber, since: float | None) -> bool:
        log.info(
            "Client {name} asked for a replay since {since} of topics this proxy did not hold "
            "upstream all that time: NOT_FOUND",
            name=client.name,
            since=since,
        )
        return False

    def _too_old(self, client: Subscriber, asked: float, oldest: float) -> bool:
        log.warn(
            "Client {name} requested messages from too far in the past. Requested: {asked} "
            "oldest complete: {oldest}",
            name=client.name,
            asked=asked,
            oldest=oldest,
        )
        return False

    # --- inspection ----------------------------------------------------------------------

    def topic_counts(self) -> list[tuple[bytes, int]]:
        """``(topic, subscriber count)``, most subscribed first."""
        return sorted(((t, len(s)) for t, s in self.subscribers.items()), key=lambda ts: (-ts[1], ts[0]))

    def subscription_count(self) -> int:
        return self.subscriptions
