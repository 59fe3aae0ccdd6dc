"""The memcached-text-protocol codec of kraken-pubsub, without any I/O.

:class:`CommandParser` turns the bytes a client sends into :class:`Get`, :class:`Set` and
:class:`Quit` events (and, for the server, runs of pipelined one-record publishes into one
:class:`Publishes` event); the helpers below parse the data blocks of
``set publish|subscribe|retro_subscribe`` and serialise ``MESSAGE`` records and replies.
:class:`ReplyParser` is the client side: server bytes to replies.

Valid input gives the original server's bytes exactly. A malformed command raises
:class:`MalformedCommand` carrying the reply to send before closing (the original closed
most such connections silently); after it the parser ignores further input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NoReturn

from kraken.core import wire

CRLF = b"\r\n"
STORED = b"STORED\r\n"
END = b"END\r\n"
NOT_FOUND = b"NOT_FOUND\r\n"
ERROR = b"ERROR\r\n"
TOO_MANY_CLIENTS = b"SERVER_ERROR Too many clients\r\n"
TOO_MANY_CLIENTS_FROM_ADDRESS = b"SERVER_ERROR Too many clients from this address\r\n"

GET_KEYS = frozenset({b"messages", b"register", b"position"})
SET_KEYS = frozenset({
    b"subscribe", b"unsubscribe", b"publish", b"register", b"retro_subscribe",
    b"psubscribe", b"punsubscribe", b"retro_psubscribe",
    b"proxy", b"peer",
})

DEFAULT_MAX_LINE = 4096
DEFAULT_MAX_VALUE = 8 * 1024 * 1024

_COUNT = re.compile(rb"[+-]?[0-9]+\Z")
# The common set line, matched in one go; anything else takes the general path.
_SET_LINE = re.compile(
    rb"set (subscribe|unsubscribe|publish|register|retro_subscribe|psubscribe|punsubscribe|retro_psubscribe"
    rb"|proxy|peer)"
    rb" [^ \r\n]{1,64} [^ \r\n]{1,64} ([0-9]{1,12})\r\n"
)
# A whole `set publish` command whose data is one one-topic record in canonical form (what
# :func:`single_record` accepts): the publisher's common case, taken in one match.
_CANONICAL_PUBLISH = re.compile(
    rb"set publish [^ \r\n]{1,64} [^ \r\n]{1,64} ([0-9]{1,12})\r\n"
    rb"MESSAGE ([^ \r\n]+) (0|[1-9][0-9]{0,11})\r\n"
)
_HORIZON = re.compile(rb"[0-9]+(\.[0-9]*)?\Z")
# <seq>[.<upstream connection>][/<upstream position>]; a cluster's: <conn>-<position>,... per peer
_POSITION = re.compile(rb"[0-9]{1,20}(\.[0-9]{1,10})?(/[0-9][0-9./,-]{0,600})?\Z")

Record = tuple[list[bytes], bytes]


class WireError(wire.WireError):
    """A command, data block or reply that does not follow the protocol; the reason says why."""


class MalformedCommand(WireError):
    """Input the server cannot accept: send :attr:`reply`, then close."""

    def __init__(self, reply: bytes, reason: str) -> None:
        super().__init__(reason)
        self.reply = reply


@dataclass(slots=True)
class Get:
    key: bytes


@dataclass(slots=True)
class Set:
    key: bytes
    data: bytes


@dataclass(slots=True)
class Quit:
    pass


@dataclass(slots=True)
class Publishes:
    """Consecutive ``set publish`` commands, each of one one-topic record in canonical form:
    ``(topic, payload, record bytes)`` per command, in order (one ``STORED`` each). Only a
    parser made with ``batch_publishes`` gives these; its other events are unchanged."""

    records: list[tuple[bytes, bytes, bytes]]

    def as_sets(self) -> list[Set]:
        """The same commands as the plain parser gives them."""
        return [Set(b"publish", record) for _, _, record in self.records]


Event = Get | Set | Quit | Publishes


def client_error(reason: str) -> bytes:
    return b"CLIENT_ERROR " + reason.encode("ascii") + CRLF


def server_error(reason: str) -> bytes:
    """A refusal the connection survives (a limit), as memcached answers one it cannot store."""
    return b"SERVER_ERROR " + reason.encode("ascii") + CRLF


def _tokens(rest: bytes) -> list[bytes]:
    """Split on single spaces and drop trailing empty pieces, as the original does."""
    parts = rest.split(b" ")
    while parts and not parts[-1]:
        parts.pop()
    return parts


class CommandParser:
    """Bytes from a client in, command events out; arbitrary segmentation and pipelining.

    :meth:`feed` returns an iterator over the commands the bytes complete; a malformed one
    raises :class:`MalformedCommand` from it, after the commands before it. Iterate each
    feed's commands before feeding more.

    With *batch_publishes*, a series of pipelined canonical one-record publishes comes out as
    one :class:`Publishes` event (the server's hot path: one regex match per command, no
    event object per command); everything else is parsed as without it.
    """

    def __init__(
        self,
        max_line: int = DEFAULT_MAX_LINE,
        max_value: int = DEFAULT_MAX_VALUE,
        batch_publishes: bool = False,
    ) -> None:
        self.max_line = max_line
        self.max_value = max_value
        self.batch_publishes = batch_publishes
        # (head, topic, set line size, head size, payload size) of the last canonical publish
        self._last_publish_head: tuple[bytes, bytes, int, int, int] = (b"", b"", 0, 0, 0)
        self._buf = bytearray()
        self._pending: tuple[bytes, int] | None = None
        self.failed = False

    def feed(self, data: bytes) -> Iterator[Event]:
        if self.failed:
            return iter(())
        self._buf += data
        return self._commands()

    def _commands(self) -> Iterator[Event]:
        buf = self._buf
        pos = 0
        size = len(buf)
        try:
            while True:
                pending = self._pending
                if pending is not None:
                    key, count = pending
                    end = pos + count
                    if size < end + 2:
                        break
                    if not buf.startswith(CRLF, end):
                        self._fail("bad data chunk", "data block not followed by CRLF")
                    self._pending = None
                    start, pos = pos, end + 2
                    yield Set(key, bytes(buf[start:end]))
                    continue
                if self.batch_publishes:
                    batch, pos, partial = self._publishes(buf, pos, size)
                    if batch:
                        yield Publishes(batch)
                        continue
                    if partial:
                        break
                fast = _SET_LINE.match(buf, pos)
                if fast is not None and fast.end() - pos <= self.max_line:
                    key, count_text = fast.groups()
                    count = int(count_text)
                    if count <= self.max_value:
                        self._pending = (key, count)
                        pos = fast.end()
                        continue
                eol = buf.find(b"\n", pos)
                if eol < 0:
                    if size - pos > self.max_line:
                        self._fail("line too long", f"no LF within {self.max_line} bytes")
                    break
                if eol - pos >= self.max_line:
                    self._fail("line too long", f"command line over {self.max_line} bytes")
                line = bytes(buf[pos : eol + 1])
                pos = eol + 1
                event = self._command(line)
                if event is not None:
                    if isinstance(event, Quit):
                        self.failed = True
                        yield event
                        return
                    yield event
        finally:
            if self.failed:
                buf.clear()
            elif pos:
                del buf[:pos]

    def _publishes(
        self, buf: bytearray, pos: int, size: int
    ) -> tuple[list[tuple[bytes, bytes, bytes]], int, bool]:
        """The complete canonical one-record publishes from *pos* on, where they end, and
        whether a canonical head follows whose payload has not all arrived (it waits for
        more input here). Whatever does not fit the pattern exactly is left to the general
        path.

        A publisher's pipelined commands mostly repeat one head (set line and MESSAGE line:
        same topic, same length): a command starting with the last matched head only needs
        its payload's two CRLFs checked."""
        batch: list[tuple[bytes, bytes, bytes]] = []
        head, topic, line_size, head_size, payload_size = self._last_publish_head
        while True:
            if not (head and buf.startswith(head, pos)):
                m = _CANONICAL_PUBLISH.match(buf, pos)
                if m is None:
                    break
                line_size = m.end(1) + 2 - pos
                head_size = m.end() - pos
                payload_size = int(m.group(3))
                if (
                    line_size > self.max_line
                    or int(m.group(1)) != head_size - line_size + payload_size + 2
                    or int(m.group(1)) > self.max_value
                ):
                    break
                head, topic = bytes(buf[pos : pos + head_size]), m.group(2)
                self._last_publish_head = (head, topic, line_size, head_size, payload_size)
            stop = pos + head_size + payload_size
            if size < stop + 4:
                return batch, pos, True
            if not buf.startswith(b"\r\n\r\n", stop):
                break
            record = bytes(buf[pos + line_size : stop + 2])
            batch.append((topic, record[head_size - line_size : -2], record))
            pos = stop + 4
        return batch, pos, False

    def _fail(self, reply_reason: str, reason: str) -> NoReturn:
        self._refuse(client_error(reply_reason), reason)

    def _refuse(self, reply: bytes, reason: str) -> NoReturn:
        self.failed = True
        raise MalformedCommand(reply, reason)

    def _command(self, line: bytes) -> Event | None:
        if not line.endswith(CRLF):
            self._fail("line must end with CRLF", f"LF-only line {line[:40]!r}")
        body = line[:-2]
        if body == b"quit":
            return Quit()
        if body.startswith(b"get "):
            tokens = _tokens(body[4:])
            if len(tokens) != 1 or not tokens[0]:
                self._fail("bad command line format", "get takes exactly one key")
            if tokens[0] not in GET_KEYS:
                self._refuse(ERROR, f"unknown get key {tokens[0][:40]!r}")
            return Get(tokens[0])
        if body.startswith(b"set "):
            tokens = _tokens(body[4:])
            if len(tokens) == 5 and tokens[4] == b"noreply":
                self._fail("noreply is not supported", "set with noreply")
            if len(tokens) != 4 or not all(tokens[:3]):
                self._fail("bad command line format", "set takes <key> <flags> <exptime> <bytes>")
            key, _flags, _exptime, count_text = tokens
            if key not in SET_KEYS:
                self._refuse(ERROR, f"unknown set key {key[:40]!r}")
            if not _COUNT.match(count_text):
                self._fail("bad data chunk", f"byte count {count_text[:40]!r} is not a number")
            count = int(count_text)
            if count < 0:
                self._fail("bad data chunk", f"negative byte count {count}")
            if count > self.max_value:
                self._fail(f"value of {count} bytes is over the limit of {self.max_value}", "value too large")
            self._pending = (key, count)
            return None
        self._refuse(ERROR, f"unknown command {body[:40]!r}")


def parse_topics(data: bytes) -> list[bytes]:
    """``set subscribe|unsubscribe`` data: every single space separates (``a  b`` has ``''``)."""
    return data.split(b" ")


def parse_publish(data: bytes) -> list[Record]:
    """A publish body (``MESSAGE <topics…> <len>\\r\\n<payload>\\r\\n`` repeated) to records."""
    records: list[Record] = []
    pos = 0
    size = len(data)
    while pos < size:
        eol = data.find(CRLF, pos)
        if eol < 0:
            raise WireError(f"record header at byte {pos} has no CRLF")
        if data[pos : pos + 8] != b"MESSAGE ":
            raise WireError(f"record at byte {pos} does not start with 'MESSAGE '")
        parts = data[pos + 8 : eol].split(b" ")
        length_text = parts.pop()
        if not length_text.isdigit():
            raise WireError(f"record at byte {pos}: length {length_text[:20]!r} is not a number")
        start = eol + 2
        end = start + int(length_text)
        if end + 2 > size:
            raise WireError(f"record at byte {pos}: payload runs past the end of the block")
        if data[end : end + 2] != CRLF:
            raise WireError(f"record at byte {pos}: payload not followed by CRLF (wrong length?)")
        records.append((parts, data[start:end]))
        pos = end + 2
    return records


def single_record(data: bytes) -> tuple[bytes, bytes] | None:
    """``(topic, payload)`` when *data* is exactly one one-topic record in canonical form (the
    bytes a subscriber would receive), else ``None``: the publisher's bytes can then be
    forwarded as they are. Anything else goes through :func:`parse_publish`."""
    eol = data.find(CRLF)
    if eol < 0 or not data.startswith(b"MESSAGE "):
        return None
    parts = data[8:eol].split(b" ")
    if len(parts) != 2:
        return None
    topic, length_text = parts
    if not length_text.isdigit() or (length_text[0] == 48 and length_text != b"0"):
        return None
    start = eol + 2
    end = start + int(length_text)
    if end + 2 != len(data) or not data.endswith(CRLF):
        return None
    return topic, data[start:end]


def parse_retro(data: bytes) -> tuple[float | bytes, list[bytes]]:
    """``set retro_subscribe`` data: ``<unix seconds>\\r\\n<topics>`` (trailing spaces
    dropped); instead of the time, ``@<position>`` as ``get position`` gave it."""
    pieces = data.split(CRLF)
    if len(pieces) != 2:
        raise WireError("retro_subscribe data must be <unix seconds>CRLF<topics>")
    horizon_text, topics = pieces
    if horizon_text.startswith(b"@"):
        if not _POSITION.match(horizon_text, 1):
            raise WireError(f"position {horizon_text[:40]!r} is not one from get position")
        return horizon_text[1:], _tokens(topics)
    if not _HORIZON.match(horizon_text):
        raise WireError(f"horizon {horizon_text[:40]!r} is not a Unix time in seconds")
    return float(horizon_text), _tokens(topics)


def record(topics: Sequence[bytes], payload: bytes) -> bytes:
    """One ``MESSAGE`` record as it appears in a publish body or a ``get messages`` reply."""
    head = b"MESSAGE " + b"".join([t + b" " for t in topics]) if topics else b"MESSAGE "
    return b"%s%d\r\n%s\r\n" % (head, len(payload), payload)


def publish_body(records: Iterable[tuple[Sequence[bytes], bytes]]) -> bytes:
    return b"".join(record(topics, payload) for topics, payload in records)


def value_reply(block: bytes) -> bytes:
    """The ``get messages`` reply for the concatenated records *block* (``END`` when empty)."""
    if not block:
        return END
    return b"VALUE messages 0 %d\r\n%sEND\r\n" % (len(block) - 2, block)


def position_reply(token: bytes) -> bytes:
    return b"VALUE position 0 %d\r\n%s\r\nEND\r\n" % (len(token), token)


def set_command(key: bytes, data: bytes) -> bytes:
    return b"set %s 0 0 %d\r\n%s\r\n" % (key, len(data), data)


def get_command(key: bytes = b"messages") -> bytes:
    return b"get %s\r\n" % key


# --- client side -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """One server reply: ``kind`` is STORED, END, NOT_FOUND, ERROR, CLIENT_ERROR, SERVER_ERROR
    or VALUE; ``text`` is the error reason or, for VALUE, the record block (with its last CRLF)."""

    kind: str
    text: bytes = b""

    def records(self) -> list[Record]:
        return parse_publish(self.text) if self.kind == "VALUE" else []


_SIMPLE = {b"STORED": "STORED", b"END": "END", b"NOT_FOUND": "NOT_FOUND", b"ERROR": "ERROR"}


class ReplyParser:
    """Server bytes in, :class:`Reply` objects out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Reply]:
        buf = self._buf
        buf += data
        replies: list[Reply] = []
        pos = 0
        while True:
            eol = buf.find(CRLF, pos)
            if eol < 0:
                break
            line = bytes(buf[pos:eol])
            if line in _SIMPLE:
                replies.append(Reply(_SIMPLE[line]))
                pos = eol + 2
                continue
            if line.startswith(b"VALUE "):
                parts = line.split(b" ")
                if len(parts) != 4 or not parts[3].isdigit():
                    raise WireError(f"bad VALUE line {line[:60]!r}")
                start = eol + 2
                end = start + int(parts[3]) + 2
                if len(buf) < end + 5:
                    break
                if buf[end : end + 5] != END:
                    raise WireError("VALUE block not followed by END")
                replies.append(Reply("VALUE", bytes(buf[start:end])))
                pos = end + 5
                continue
            kind, _, text = line.partition(b" ")
            if kind in (b"CLIENT_ERROR", b"SERVER_ERROR"):
                replies.append(Reply(kind.decode(), text))
                pos = eol + 2
                continue
            raise WireError(f"unexpected reply line {line[:60]!r}")
        if pos:
            del buf[:pos]
        return replies
