"""The browser's WebSocket (autobahn): login, watch one page, ask for a node, act as operator.

Messages are JSON objects with a ``type``. From the browser: ``hello`` ``{token}`` first, then
``watch`` ``{page}``, ``node`` ``{id, server, node}``, and for operators ``power`` ``{id, server,
node, phys}`` and ``replay`` ``{id, server, pipeline}``. To the browser: ``welcome`` ``{role,
pages}``, ``snapshot`` ``{page, data, at}``, ``reply`` ``{id, ok, data | error}`` and ``error``
``{message}``. A browser that does not keep up gets only the newest snapshot when it drains.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from kraken.core import jsonlimits
from kraken.core.producer import FlushWhenResumed
from kraken.core.tls import SeesTLSLayer
from kraken.dashboard.auth import OPERATOR, Access, LoginRefused
from kraken.dashboard.hub import Hub
from kraken.dashboard.sources import FetchError

log = Logger(namespace="kraken.dashboard.websocket")
MAX_MESSAGE = 4096  # from a browser (frames and whole messages)
MAX_SNAPSHOT = 64 * 1024 * 1024  # to a browser

Action = Callable[[dict[str, Any]], Deferred[Any]]


class DashboardSocket(SeesTLSLayer, WebSocketServerProtocol):  # type: ignore[misc]
    factory: DashboardSocketFactory
    role: str | None = None
    page: str | None = None
    login_timer: IDelayedCall | None = None

    def onConnect(self, request: ConnectionRequest) -> None:
        """Refuse pages of other sites (a browser sends its certificate to any page's socket),
        and browsers beyond the cap."""
        if len(self.factory.open) >= self.factory.max_clients:
            raise ConnectionDeny(503, "too many dashboard connections")
        origin = request.origin
        if origin and origin != "null":
            host = request.host.rsplit(":", 1)[0].strip("[]") if request.host else ""
            if urlsplit(origin).hostname != host:
                raise ConnectionDeny(403, "cross-origin WebSocket refused")

    def onOpen(self) -> None:
        self.flow = FlushWhenResumed(self)
        self.registerProducer(self.flow, True)
        self.held: bytes | None = None  # the newest snapshot, while the socket is full
        self.factory.open.add(self)
        self.login_timer = self.factory.clock.callLater(self.factory.login_timeout, self._login_late)

    def _login_late(self) -> None:
        if self.role is None:
            log.info("browser {peer} did not log in within {t} s: dropped", peer=self.peer,
                     t=self.factory.login_timeout)
            self.dropConnection(abort=True)

    def onMessageFrameBegin(self, length: int) -> None:
        super().onMessageFrameBegin(length)
        if self.message_data_total_length > MAX_MESSAGE:  # a message fragmented past the limit
            log.warn("browser {peer} sent a message over {n} bytes: dropped", peer=self.peer, n=MAX_MESSAGE)
            self.dropConnection(abort=True)

    def _write(self, payload: bytes) -> None:
        if self.state != WebSocketServerProtocol.STATE_OPEN:
            return
        if len(payload) > MAX_SNAPSHOT:
            too_large = {"type": "error", "message": "this page's data is too large to send"}
            payload = json.dumps(too_large).encode()
        self.sendMessage(payload)

    def _send_json(self, message: dict[str, Any]) -> None:
        self._write(json.dumps(message).encode())

    def _refuse(self, message: str) -> None:
        self._send_json({"type": "error", "message": message})

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N803 - autobahn names
        try:
            msg = jsonlimits.loads(payload, strict=True)
        except (UnicodeDecodeError, ValueError):
            self._refuse("a message is a JSON object")
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            self._refuse('a message is a JSON object with a "type"')
            return
        kind = msg["type"]
        if kind == "hello":
            self._hello(msg)
        elif self.role is None:
            self._refuse("log in first (hello)")
        elif kind == "watch":
            self._watch(msg.get("page"))
        elif kind in self.factory.requests:
            self._request(kind, msg)
        elif kind in self.factory.actions:
            if self.role != OPERATOR:
                self._reply(msg, error="this needs an operator login")
                return
            self._request(kind, msg, action=True)
        else:
            self._refuse(f"unknown message type {kind[:40]!r}")

    def _hello(self, msg: dict[str, Any]) -> None:
        try:
            self.role = self.factory.access.login(msg.get("token"), self.tls_peer)
        except LoginRefused as e:
            self._send_json({"type": "denied", "message": str(e)})
            return
        if self.login_timer is not None and self.login_timer.active():
            self.login_timer.cancel()
        self._send_json({"type": "welcome", "role": self.role, "pages": sorted(self.factory.hub.adapters)})

    def _watch(self, page: Any) -> None:
        hub = self.factory.hub
        if not isinstance(page, str) or page not in hub.adapters:
            self._refuse("no such page")
            return
        hub.unwatch(self.snapshot)
        self.page = page
        hub.watch(page, self.snapshot)

    def _reply(self, msg: dict[str, Any], data: Any = None, error: str | None = None) -> None:
        reply: dict[str, Any] = {"type": "reply", "id": msg.get("id"), "ok": error is None}
        if error is None:
            reply["data"] = data
        else:
            reply["error"] = error
        self._send_json(reply)

    def _request(self, kind: str, msg: dict[str, Any], action: bool = False) -> None:
        handler = (self.factory.actions if action else self.factory.requests)[kind]
        if action:
            who = self.tls_peer.name if self.tls_peer is not None else self.peer
            log.info("operator {who} asked: {kind} {msg}", who=who, kind=kind, msg=json.dumps(msg)[:300])
        d = maybeDeferred(handler, msg)

        def failed(failure: Any) -> None:
            if failure.check(FetchError):
                self._reply(msg, error=str(failure.value))
            else:
                log.failure("dashboard request {kind} failed", failure, kind=kind)
                self._reply(msg, error="unexpected error; see the dashboard's log")

        d.addCallbacks(lambda data: self._reply(msg, data), failed)

    def snapshot(self, page: str, data: dict[str, Any], at: float) -> None:
        if page != self.page:
            return
        message = json.dumps({"type": "snapshot", "page": page, "data": data, "at": at}).encode()
        if self.flow.paused:
            self.held = message
            return
        self._write(message)

    def flush(self) -> None:
        if self.held is not None:
            message, self.held = self.held, None
            self._write(message)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N803
        self.factory.hub.unwatch(self.snapshot)
        self.factory.open.discard(self)
        if self.login_timer is not None and self.login_timer.active():
            self.login_timer.cancel()


class DashboardSocketFactory(WebSocketServerFactory):
    protocol = DashboardSocket  # type: ignore[assignment]

    def __init__(
        self,
        hub: Hub,
        access: Access,
        requests: dict[str, Action],
        actions: dict[str, Action],
        clock: IReactorTime,
        max_clients: int = 100,
        login_timeout: float = 10.0,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.max_clients = max_clients
        self.login_timeout = login_timeout
        self.open: set[DashboardSocket] = set()
        self.hub = hub
        self.access = access
        self.requests = requests
        self.actions = actions
        # autobahn applies maxMessagePayloadSize to what we send too, so it bounds snapshots;
        # what a browser may send is bounded per frame here and per message in onMessageFrameBegin.
        self.setProtocolOptions(
            maxFramePayloadSize=MAX_MESSAGE, maxMessagePayloadSize=MAX_SNAPSHOT,
            autoPingInterval=30, autoPingTimeout=10,
        )
