"""One memcached client's conversation: command events in, reply bytes out (no I/O).

The Twisted protocol in :mod:`kraken.pubsub.server` feeds received bytes to :meth:`receive`
and writes what it returns; ``closing`` tells it to drop the connection afterwards.
"""

from __future__ import annotations

from twisted.logger import Logger

from kraken.pubsub import wire
from kraken.pubsub.patterns import BadPattern, parse_patterns
from kraken.pubsub.router import OverLimit, Router
from kraken.pubsub.subscriber import QueueSubscriber

log = Logger(namespace="kraken.pubsub.session")


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
        self.parser = wire.CommandParser(max_line, max_value)
        self.closing = False
        self.error: str | None = None

    def receive(self, data: bytes) -> bytes:
        """Handle every complete command in *data*; the concatenated replies."""
        if self.closing:
            return b""
        out: list[bytes] = []
        try:
            for event in self.parser.feed(data):
                if isinstance(event, wire.Set):
                    out.append(self._set(event))
                elif isinstance(event, wire.Get):
                    out.append(self._get(event))
                else:
                    self.closing = True
                if self.closing:
                    break
        except wire.MalformedCommand as e:
            out.append(self._refuse(e.reply, e.reason))
        self.router.flush()
        return b"".join(out)

    def _refuse(self, reply: bytes, reason: str) -> bytes:
        self.closing = True
        self.error = reason
        log.info("closing {name}: {reason}", name=self.client.name, reason=reason)
        return reply

    def _get(self, event: wire.Get) -> bytes:
        if event.key == b"messages":
            self.router.flush()
            return self.client.drain_reply(self.router.now())
        self.router.register(self.client)
        return wire.STORED

    def _set(self, event: wire.Set) -> bytes:
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
            return wire.STORED if found else wire.NOT_FOUND
        if key == b"unsubscribe":
            router.unsubscribe(self.client, wire.parse_topics(event.data))
            return wire.STORED
        if key == b"register":
            router.register(self.client)
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
        return wire.STORED if found else wire.NOT_FOUND

    def _patterns(self, key: bytes, data: bytes) -> bytes:
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
        return wire.STORED if found else wire.NOT_FOUND
