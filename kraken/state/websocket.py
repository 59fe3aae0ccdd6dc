"""The event websocket (spec §4.2) with autobahn: subscribe by event type, one JSON object per event.

The same port serves node consoles at ``/node/{id}/console`` (:mod:`kraken.state.console_socket`):
a connection to that path is handed to a :class:`ConsoleStream`; any other path is the event
stream, as in the original.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionRequest
from twisted.logger import Logger

from kraken.core import jsonlimits
from kraken.core.producer import FlushWhenResumed
from kraken.core.tls import SeesTLSLayer
from kraken.state import model
from kraken.state.console import ConsoleManager
from kraken.state.console_socket import MAX_INPUT_MESSAGE, ConsoleStream, console_node
from kraken.state.events import DiscoveryData, Event, EventBus, EventType, MutationData, OperationData

log = Logger(namespace="kraken.state.websocket")

_TYPES = {
    t.name: t
    for t in (EventType.STATE_CHANGE, EventType.STATE_MUTATION, EventType.DISCOVERY, EventType.OPERATION)
}
_COMMANDS = {"SUBSCRIBE": 0, "UNSUBSCRIBE": 1}
_ids = itertools.count(1)
MAX_PENDING = 50  # messages held for a client whose socket is full; one more and it is dropped


class CommandError(ValueError):
    pass


def parse_command(payload: bytes) -> tuple[int, EventType]:
    """``{"command": 0|1|"SUBSCRIBE"|"UNSUBSCRIBE", "type": name|number}`` → (command, type)."""
    try:
        msg = jsonlimits.loads(payload, strict=True)
    except (UnicodeDecodeError, ValueError):
        raise CommandError("message is not JSON") from None
    if not isinstance(msg, dict):
        raise CommandError("message must be a JSON object")
    command = msg.get("command", 0)
    if isinstance(command, str):
        command = _COMMANDS.get(command.upper(), command)
    if command not in (0, 1) or isinstance(command, bool):
        raise CommandError("command must be 0 (SUBSCRIBE) or 1 (UNSUBSCRIBE)")
    kind = msg.get("type")
    if isinstance(kind, str) and kind in _TYPES:
        return command, _TYPES[kind]
    if isinstance(kind, int) and not isinstance(kind, bool) and kind in {t.value for t in _TYPES.values()}:
        return command, EventType(kind)
    raise CommandError("type must be STATE_CHANGE, STATE_MUTATION, DISCOVERY or OPERATION")


def event_message(event: Event) -> dict[str, Any]:
    node_id, path = model.split_url(event.url)
    data = event.data
    value: Any
    if isinstance(data, MutationData):
        value = data.mutation
    elif isinstance(data, DiscoveryData):
        value = data.value
    elif isinstance(data, OperationData):
        value = data.progress
    else:
        value = model.printable(data.value)
    return {"type": int(event.type), "url": path, "data": event.describe(), "nodeid": node_id, "value": value}


# autobahn's own bases disagree on the types of ``peer`` and its private transport details;
# mypy reports that on every class that mixes another base in.
class EventSocket(SeesTLSLayer, WebSocketServerProtocol):  # type: ignore[misc]
    factory: EventSocketFactory
    console: ConsoleStream | None = None

    def onConnect(self, request: ConnectionRequest) -> None:
        node = console_node(request.path)
        if node is None or self.factory.consoles is None:
            return
        who = self.tls_peer.name if self.tls_peer is not None else "anonymous"
        self.console = ConsoleStream(self, self.factory.consoles, node, f"{who} at {self.peer}")
        self.maxMessagePayloadSize = self.maxFramePayloadSize = MAX_INPUT_MESSAGE

    def onOpen(self) -> None:
        if self.console is not None:
            self.console.opened()
            return
        self.sub_name = f"ws-{next(_ids)}"
        self.types: set[EventType] = set()
        self.pending: deque[bytes] = deque()
        self.flow = FlushWhenResumed(self)
        self.registerProducer(self.flow, True)
        who = self.tls_peer.name if self.tls_peer is not None else self.peer
        log.info("websocket client {who} connected", who=who)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N803 - autobahn names
        if self.console is not None:
            self.console.message(payload)
            return
        try:
            command, kind = parse_command(payload)
        except CommandError as e:
            self.sendMessage(json.dumps({"error": str(e)}).encode())
            return
        if command == 0:
            self.types.add(kind)
        else:
            self.types.discard(kind)
        bus = self.factory.bus
        if self.types:
            bus.subscribe(self.sub_name, self.types, self._send_event)
        else:
            bus.unsubscribe(self.sub_name)

    def _send_event(self, event: Event) -> None:
        if self.state != WebSocketServerProtocol.STATE_OPEN:
            self.factory.bus.unsubscribe(self.sub_name)
            return
        message = json.dumps(event_message(event)).encode()
        if not self.flow.paused and not self.pending:
            self.sendMessage(message)
            return
        self.pending.append(message)
        if len(self.pending) > MAX_PENDING:
            log.warn("websocket client {peer} is not reading: dropped", peer=self.peer)
            self.factory.bus.unsubscribe(self.sub_name)
            self.pending.clear()
            self.dropConnection(abort=True)

    def flush(self) -> None:
        while self.pending and not self.flow.paused and self.state == WebSocketServerProtocol.STATE_OPEN:
            self.sendMessage(self.pending.popleft())

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N803
        if self.console is not None:
            self.console.closed()
        if hasattr(self, "sub_name"):
            self.factory.bus.unsubscribe(self.sub_name)


class EventSocketFactory(WebSocketServerFactory):
    # autobahn's factories are not generic in their protocol, so Twisted's Factory[P] cannot
    # see that EventSocket's factory is this class.
    protocol = EventSocket  # type: ignore[assignment]

    def __init__(self, bus: EventBus, consoles: ConsoleManager | None = None) -> None:
        super().__init__()
        self.bus = bus
        self.consoles = consoles
        self.setProtocolOptions(maxMessagePayloadSize=512, autoPingInterval=54, autoPingTimeout=6)
