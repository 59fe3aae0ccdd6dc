"""Serial consoles of nodes (IPMI serial-over-LAN): one session per client, the limits around it.

No I/O here. A :class:`ConsoleSession` sits between a client (the websocket, a
:class:`ConsoleClient`) and a BMC link (a :class:`ConsoleLink` that a state module opens, which
reports back as a :class:`ConsoleSink`); time comes from the clock it is given.

Limits, each from :class:`ConsoleLimits`:

- ``per_node`` sessions on one node (default 1): one more is **refused** (``CONSOLE_BUSY``,
  naming the holder); the holder is never kicked out.
- ``sessions`` per server: one more is refused (``CONSOLE_LIMIT``).
- ``idle`` seconds without a byte either way close the session (``CONSOLE_IDLE``).
- ``connect`` seconds for the BMC to activate the console (``BMC_TIMEOUT``).
- ``output_buffer`` bytes of console output held for a client that does not read: beyond it
  the **oldest** bytes are dropped (the machine does not wait for us: the BMC is acknowledged
  at once) and the client is told how many (``{"event": "dropped", "bytes": N}``).
- ``input_buffer`` bytes of typed input waiting for the BMC: beyond it the session closes
  (``INPUT_OVERFLOW``) rather than hold more.

Every refusal or failure is one JSON text message ``{"error": {"code", "message"}}`` followed by a
close whose code is 4000 + the HTTP status the REST API would answer (4404 unknown node, 4409
busy or no console, 4502 BMC error, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.state.modules.base import ActionError, ConsoleLink, Starter

log = Logger(namespace="kraken.state.console")

CLOSE_BASE = 4000  # websocket close codes 4000-4999 are the application's: 4000 + HTTP status


@dataclass(frozen=True)
class ConsoleLimits:
    per_node: int = 1
    sessions: int = 16
    idle: float = 900.0
    connect: float = 30.0
    output_buffer: int = 256 * 1024
    input_buffer: int = 64 * 1024


Resolver = Callable[[str], Starter]  # node id -> how to open its console; raises ActionError


class ConsoleClient(Protocol):
    """The client end (the websocket) as a session sees it."""

    def writable(self) -> bool: ...

    def send_bytes(self, data: bytes) -> None: ...

    def send_json(self, body: dict[str, Any]) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


def refuse(client: ConsoleClient, error: ActionError) -> None:
    """Tell *client* why (one JSON message) and close with ``4000 + status``."""
    client.send_json({"error": {"code": error.code, "message": str(error)}})
    client.close(CLOSE_BASE + error.status, str(error).encode()[:120].decode("utf-8", "ignore"))


class ConsoleSession:
    def __init__(
        self,
        node_id: str,
        holder: str,
        client: ConsoleClient,
        clock: IReactorTime,
        limits: ConsoleLimits,
        on_end: Callable[[ConsoleSession], None] = lambda s: None,
    ) -> None:
        self.node_id = node_id
        self.holder = holder
        self.client = client
        self.clock = clock
        self.limits = limits
        self.on_end = on_end
        self.started = clock.seconds()
        self.last_activity = self.started
        self.link: ConsoleLink | None = None
        self.is_connected = False
        self.closed = False
        self.held = bytearray()  # output waiting for the client
        self.dropped = 0
        self.typed = bytearray()  # input waiting for the BMC
        self.sending = False
        self.bytes_out = 0
        self.bytes_in = 0
        self._idle_call: IDelayedCall | None = clock.callLater(limits.idle, self._check_idle)
        self._connect_call: IDelayedCall | None = clock.callLater(limits.connect, self._connect_timeout)

    def start(self, starter: Starter) -> None:
        try:
            self.link = starter(self)
        except ActionError as e:
            self.end(e)

    # -- the BMC side (ConsoleSink) -------------------------------------------------------------
    def connected(self) -> None:
        if self.closed or self.is_connected:
            return
        self.is_connected = True
        self._cancel("_connect_call")
        self.client.send_json({"event": "connected", "node": self.node_id})
        self._send_typed()

    def output(self, data: bytes) -> None:
        if self.closed or not data:
            return
        self.last_activity = self.clock.seconds()
        self.bytes_out += len(data)
        if not self.held and self.client.writable():
            self.client.send_bytes(data)
            return
        self.held += data
        over = len(self.held) - self.limits.output_buffer
        if over > 0:
            del self.held[:over]
            self.dropped += over

    def info(self, message: str) -> None:
        if not self.closed:
            self.client.send_json({"event": "info", "message": message})

    def ended(self, error: ActionError | None) -> None:
        self.end(error or ActionError(502, "CONSOLE_ENDED", "the BMC ended the console session"))

    # -- the client side ----------------------------------------------------------------------------
    def received(self, data: bytes) -> None:
        """Bytes the client typed."""
        if self.closed or not data:
            return
        self.last_activity = self.clock.seconds()
        if len(self.typed) + len(data) > self.limits.input_buffer:
            self.end(
                ActionError(
                    413, "INPUT_OVERFLOW",
                    f"more than {self.limits.input_buffer} bytes of input wait for the BMC; closing",
                )
            )
            return
        self.typed += data
        self._send_typed()

    def flush(self) -> None:
        """The client can take output again: what was held goes out, after a note of any drop."""
        if self.closed or not self.client.writable():
            return
        if self.dropped:
            self.client.send_json({"event": "dropped", "bytes": self.dropped})
            self.dropped = 0
        if self.held:
            data, self.held = bytes(self.held), bytearray()
            self.client.send_bytes(data)

    def client_gone(self) -> None:
        self._finish()

    # -- internals ----------------------------------------------------------------------------------
    def _send_typed(self) -> None:
        if self.sending or not self.is_connected or not self.typed or self.closed or self.link is None:
            return
        chunk, self.typed = bytes(self.typed), bytearray()
        self.sending = True

        def sent(_: Any) -> None:
            self.sending = False
            self.bytes_in += len(chunk)
            self._send_typed()

        def failed(failure: Failure) -> None:
            self.sending = False
            why = f"sending to the console failed: {failure.getErrorMessage()}"
            self.end(ActionError(502, "BMC_ERROR", why))

        self.link.send(chunk).addCallbacks(sent, failed)

    def _check_idle(self) -> None:
        self._idle_call = None
        if self.closed:
            return
        quiet = self.clock.seconds() - self.last_activity
        if quiet >= self.limits.idle:
            why = f"no console traffic for {self.limits.idle:g} s; closed"
            self.end(ActionError(408, "CONSOLE_IDLE", why))
            return
        self._idle_call = self.clock.callLater(self.limits.idle - quiet, self._check_idle)

    def _connect_timeout(self) -> None:
        self._connect_call = None
        why = f"the BMC did not open the console within {self.limits.connect:g} s"
        self.end(ActionError(504, "BMC_TIMEOUT", why))

    def _cancel(self, name: str) -> None:
        call = getattr(self, name)
        if call is not None and call.active():
            call.cancel()
        setattr(self, name, None)

    def end(self, error: ActionError | None) -> None:
        """Close the session; *error* (if any) is told to the client first."""
        if self.closed:
            return
        if error is not None:
            log.info(
                "console of {node} for {who} closed: {code} {why}",
                node=self.node_id, who=self.holder, code=error.code, why=str(error),
            )
            self.flush()
            refuse(self.client, error)
        else:
            self.client.close(1000, "console closed")
        self._finish()

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._cancel("_idle_call")
        self._cancel("_connect_call")
        self.held.clear()
        self.typed.clear()
        if self.link is not None:
            self.link.close()
        self.on_end(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "holder": self.holder,
            "since": self.started,
            "connected": self.is_connected,
            "bytesOut": self.bytes_out,
            "bytesIn": self.bytes_in,
        }


class ConsoleManager(Service):
    """Every open console session of this server, and the per-node and per-server limits; as a
    service, it closes them all (deactivating SOL at the BMCs) when the server stops."""

    def __init__(self, resolve: Resolver, clock: IReactorTime, limits: ConsoleLimits | None = None) -> None:
        self.resolve = resolve
        self.clock = clock
        self.limits = limits or ConsoleLimits()
        self.by_node: dict[str, list[ConsoleSession]] = {}

    def count(self) -> int:
        return sum(len(v) for v in self.by_node.values())

    def check(self, node_id: str) -> Starter:
        """How to open *node_id*'s console, or the :class:`ActionError` saying why not."""
        return self.resolve(node_id)

    def open(self, node_id: str, holder: str, client: ConsoleClient) -> ConsoleSession:
        """A started session for *client*, or :class:`ActionError` (unknown node, no console, busy,
        too many)."""
        starter = self.resolve(node_id)
        held = self.by_node.get(node_id, [])
        if len(held) >= self.limits.per_node:
            first = held[0]
            raise ActionError(
                409, "CONSOLE_BUSY",
                f"the console of {node_id} is in use by {first.holder} (for "
                f"{self.clock.seconds() - first.started:.0f} s); at most {self.limits.per_node} per node",
            )
        if self.count() >= self.limits.sessions:
            raise ActionError(
                503, "CONSOLE_LIMIT",
                f"this server has {self.limits.sessions} console sessions open, its limit",
            )
        session = ConsoleSession(node_id, holder, client, self.clock, self.limits, self._ended)
        self.by_node.setdefault(node_id, []).append(session)
        session.start(starter)
        return session

    def _ended(self, session: ConsoleSession) -> None:
        held = self.by_node.get(session.node_id, [])
        if session in held:
            held.remove(session)
        if not held:
            self.by_node.pop(session.node_id, None)

    def stopService(self) -> None:
        super().stopService()
        self.close_all()

    def close_all(self) -> None:
        for sessions in list(self.by_node.values()):
            for s in list(sessions):
                s.end(ActionError(503, "SHUTTING_DOWN", "the state server is shutting down"))
