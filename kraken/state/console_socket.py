"""The console end of the state websocket: ``/node/{id}/console`` on the websocket port.

Binary (or text) messages from the client are typed into the console; console output goes to
the client as binary messages; status goes as JSON text messages (``{"event": "connected"}``,
``{"event": "dropped", "bytes": N}``, ``{"event": "info", ...}``, and ``{"error": {...}}`` just
before the server closes). See :mod:`kraken.state.console` for the limits.
"""

from __future__ import annotations

import json
import re
from typing import Any

from autobahn.twisted.websocket import WebSocketServerProtocol

from kraken.core.producer import FlushWhenResumed
from kraken.state import model
from kraken.state.console import ConsoleManager, ConsoleSession, refuse
from kraken.state.model import ModelError
from kraken.state.modules.base import ActionError

CONSOLE_PATH = re.compile(r"^/node/([^/]+)/console/?$")
MAX_INPUT_MESSAGE = 64 * 1024


def console_node(path: str) -> str | None:
    """The node named by a ``/node/{id}/console`` path (not yet checked), else ``None``."""
    m = CONSOLE_PATH.match(path)
    return m.group(1) if m else None


class ConsoleStream:
    """One websocket connection carrying a console (a :class:`~kraken.state.console.ConsoleClient`)."""

    def __init__(
        self, socket: WebSocketServerProtocol, consoles: ConsoleManager, node: str, holder: str
    ) -> None:
        self.socket = socket
        self.consoles = consoles
        self.node = node
        self.holder = holder
        self.session: ConsoleSession | None = None
        self.flow = FlushWhenResumed(self)

    def opened(self) -> None:
        self.socket.registerProducer(self.flow, True)
        try:
            node_id = model.canonical_id(self.node)
        except ModelError as e:
            refuse(self, ActionError(400, "BAD_NODE_ID", str(e)))
            return
        try:
            self.session = self.consoles.open(node_id, self.holder, self)
        except ActionError as e:
            refuse(self, e)

    def message(self, payload: bytes) -> None:
        if self.session is not None:
            self.session.received(payload)

    def closed(self) -> None:
        if self.session is not None:
            self.session.client_gone()

    def flush(self) -> None:
        if self.session is not None:
            self.session.flush()

    # -- ConsoleClient ----------------------------------------------------------------------------
    def writable(self) -> bool:
        return not self.flow.paused and self.socket.state == WebSocketServerProtocol.STATE_OPEN

    def send_bytes(self, data: bytes) -> None:
        if self.socket.state == WebSocketServerProtocol.STATE_OPEN:
            self.socket.sendMessage(data, isBinary=True)

    def send_json(self, body: dict[str, Any]) -> None:
        if self.socket.state == WebSocketServerProtocol.STATE_OPEN:
            self.socket.sendMessage(json.dumps(body).encode(), isBinary=False)

    def close(self, code: int, reason: str) -> None:
        if self.socket.state == WebSocketServerProtocol.STATE_OPEN:
            self.socket.sendClose(code, reason)
