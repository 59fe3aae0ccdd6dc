"""One memcached client's conversation: command events in, reply bytes out (no I/O).

The Twisted protocol in :mod:`kraken.pubsub.server` feeds received bytes to :meth:`receive`
and writes what it returns; ``closing`` tells it to drop the connection afterwards.

On a proxy node a subscribe whose replay needs the upstream node waits for it: ``waiting``
is then true, later commands (and bytes) wait behind it, and the replies resume through
``on_resume`` — so a pipelined ``get messages`` sees the replay, as on one node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from twisted.logger import Logger

from kraken.pubsub import wire
from kraken.pubsub.patterns import BadPattern, parse_patterns
from kraken.pubsub.router import Found, OverLimit, Pending, Router
from kraken.pubsub.subscriber import QueueSubscriber

log = Logger(namespace="kraken.pubsub.session")

V = TypeVar("V")
Reply = bytes | Pending[bytes]


def _then(pending: Pending[V], render: Callable[[V], bytes]) -> Pending[bytes]:
    reply: Pending[bytes] = Pending()
    pending.then(lambda value: reply.resolve(render(value)))
    return reply


class Session:
    def __init__(
        self,
        router: Router,
        client: QueueSubscriber,
        max_line: int = wire.DEFAULT_MAX_LINE,
        max_value: int = wire.DEFAULT_MAX_VALUE,
    ) -> None:
        self.router = router
        self.client = client
        self.parser = wire.CommandParser(max_line, max_value, batch_publishes=True)
        self.closing = False
        self.error: str | None = None
        self.waiting = False
        # set proxy / set peer: only over mutual TLS with a pubsub certificate (the adapter
        # says so), as such a link sees every topic of a record
        self.may_link = False
        self.on_resume: Callable[[bytes], object] | None = None
        self._events: Iterator[wire.Event] | None = None
        self._held_input = bytearray()

    def receive(self, data: bytes) -> bytes:
        """Handle every complete command in *data*; the concatenated replies."""
        if self.closing:
            return b""
        if self.waiting:
            self._held_input += data
            return b""
        return self._run(self.parser.feed(data))

    def close(self) -> None:
        """The connection is gone: an answer still awaited is dropped."""
        self.closing = True
        self._events = None

    def _run(self, events: Iterator[wire.Event]) -> bytes:
        out: list[bytes] = []
        try:
            for event in events:
                if isinstance(event, wire.Publishes):
                    self.router.publish_encoded_many(self.client, event.records)
                    out.append(wire.STORED * len(event.records))
                    continue
                if isinstance(event, wire.Set):
                    reply = self._set(event)
                elif isinstance(event, wire.Get):
                    reply = self._get(event)
                else:
                    self.closing = True
                    break
                if isinstance(reply, Pending):
                    if reply.done and reply.value is not None:
                        reply = reply.value
                    else:
                        self.waiting = True
                        self._events = events
                        reply.then(self._answered)
                        break
                assert isinstance(reply, bytes)
                out.append(reply)
                if self.closing:
                    break
        except wire.MalformedCommand as e:
            out.append(self._refuse(e.reply, e.reason))
        self.router.flush()
        return b"".join(out)

    def _answered(self, reply: bytes) -> None:
        events, self._events = self._events, None
        if self.closing or events is None:
            return
        self.waiting = False
        out = [reply, self._run(events)]
        if not self.waiting and not self.closing and self._held_input:
            data = bytes(self._held_input)
            self._held_input.clear()
            out.append(self.receive(data))
        if self.on_resume is not None:
            self.on_resume(b"".join(out))

    @staticmethod
    def _found(found: Found) -> Reply:
        if isinstance(found, Pending):
            return _then(found, lambda value: wire.STORED if value else wire.NOT_FOUND)
        return wire.STORED if found else wire.NOT_FOUND

    def _refuse(self, reply: bytes, reason: str) -> bytes:
        self.closing = True
        self.error = reason
        log.info("closing {name}: {reason}", name=self.client.name, reason=reason)
        return reply

    def _get(self, event: wire.Get) -> Reply:
        if event.key == b"messages":
            self.router.flush()
            return self.client.drain_reply(self.router.now())
        if event.key == b"position":
            position = self.router.position(self.client)
            if isinstance(position, Pending):
                return _then(position, wire.position_reply)
            return wire.position_reply(position)
        return self._register()

    def _register(self) -> Reply:
        waiting = self.router.register(self.client)
        if waiting is None:
            return wire.STORED
        return _then(waiting, lambda _: wire.STORED)

    def _set(self, event: wire.Set) -> Reply:
        key = event.key
        router = self.router
        if key == b"publish":
            single = wire.single_record(event.data)
            if single is not None:
                router.publish_encoded(self.client, single[0], single[1], event.data)
                return wire.STORED
            try:
                records = wire.parse_publish(event.data)
            except wire.WireError as e:
                return self._refuse(wire.client_error("bad publish body"), str(e))
            router.publish(self.client, records)
            return wire.STORED
        if key == b"subscribe":
            try:
                # counted before splitting, so an oversized command costs no topic objects
                router.check_topic_count(self.client, event.data.count(b" ") + 1)
                found = router.subscribe(self.client, wire.parse_topics(event.data))
            except OverLimit as e:
                return wire.server_error(str(e))
            return self._found(found)
        if key == b"unsubscribe":
            router.unsubscribe(self.client, wire.parse_topics(event.data))
            return wire.STORED
        if key == b"register":
            return self._register()
        if key in (b"proxy", b"peer"):
            if not self.may_link:
                return wire.client_error(
                    f"set {key.decode()} needs a mutual-TLS connection with a pubsub certificate"
                )
            if key == b"proxy":
                self.client.full_records = True
            else:
                router.peer_joined(self.client)
            return wire.STORED
        if key in (b"psubscribe", b"punsubscribe", b"retro_psubscribe"):
            return self._patterns(key, event.data)
        try:
            router.check_topic_count(self.client, event.data.rstrip(b" ").count(b" ") + 1)
            horizon, topics = wire.parse_retro(event.data)
            found = router.retro_subscribe(self.client, horizon, topics)
        except wire.WireError as e:
            return self._refuse(wire.client_error("bad retro_subscribe data"), str(e))
        except OverLimit as e:
            return wire.server_error(str(e))
        return self._found(found)

    def _patterns(self, key: bytes, data: bytes) -> Reply:
        """``psubscribe``/``punsubscribe``/``retro_psubscribe``: a bad pattern or a limit gets
        an error line the connection survives, like a refused subscribe."""
        router = self.router
        try:
            if key == b"punsubscribe":
                router.punsubscribe(self.client, parse_patterns(data))
                return wire.STORED
            if key == b"psubscribe":
                router.check_topic_count(self.client, data.count(b" ") + 1)
                found = router.psubscribe(self.client, parse_patterns(data))
            else:
                router.check_topic_count(self.client, data.count(b" ") + 1)
                horizon, _ = wire.parse_retro(data)
                patterns = parse_patterns(data.partition(wire.CRLF)[2])
                found = router.retro_psubscribe(self.client, horizon, patterns)
        except wire.WireError as e:
            return self._refuse(wire.client_error("bad retro_psubscribe data"), str(e))
        except BadPattern as e:
            return wire.client_error(f"bad pattern: {e}"[:300])
        except OverLimit as e:
            return wire.server_error(str(e))
        return self._found(found)
