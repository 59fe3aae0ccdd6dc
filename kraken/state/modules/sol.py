"""IPMI serial-over-LAN through pyghmi's ``Console``, bridged into the reactor.

pyghmi is synchronous and runs its own event loop (``Session.wait_for_rsp``): whichever thread
calls it handles the packets that arrived, and calls the console's output handler from there.
So:

- one daemon thread (:class:`SolPump`) runs that loop while any console is open, and watches
  each console's ``connected`` flag (pyghmi has no callback for "activated");
- the output handler hands each chunk to the reactor with ``callFromThread``;
- opening (``Console(...)``), typed input (``send_data``, which blocks until the BMC
  acknowledges) and closing (``close``, which deactivates the payload) run in a thread pool.

A client that leaves while the BMC is still logging in must not leave the SOL payload active
(the BMC would then refuse the next session): the pump keeps such a link until pyghmi activates
or gives up, and closes it then.

pyghmi shares one RMCP+ session per (BMC, user, password); it finds an existing one only when
the credentials are given as bytes (as str, a second ``Console`` for the same BMC waits forever
on a session it believes is still logging in), so they are passed encoded.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.state.modules.base import ActionError, ConsoleSink
from kraken.state.modules.blocking import BlockingCalls

log = Logger(namespace="kraken.state.sol")

PUMP_WAIT = 0.5  # seconds one turn of pyghmi's loop may wait for a packet
LATE_CLOSE = 15.0  # seconds a console closed while logging in may take to activate (then closed)


class SolPump:
    """pyghmi's session loop in one daemon thread, running while any console link is open."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._links: set[SolLink] = set()
        self._thread: threading.Thread | None = None

    def hold(self, link: SolLink) -> None:
        with self._lock:
            self._links.add(link)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kraken-sol-pump", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        from pyghmi.ipmi.private.session import Session

        while True:
            with self._lock:
                links = list(self._links)
                if not links:
                    self._thread = None
                    return
            done = [link for link in links if not link.watch()]
            if done:
                with self._lock:
                    self._links.difference_update(done)
            try:
                Session.wait_for_rsp(timeout=PUMP_WAIT)
            except Exception:  # pyghmi's loop must keep turning for the other consoles
                log.failure("pyghmi's session loop raised")


class SolLink:
    """One SOL console at an IPMI BMC (a :class:`~kraken.state.console.ConsoleLink`)."""

    def __init__(
        self,
        settings: dict[str, Any],
        sink: ConsoleSink,
        reactor: IReactorFromThreads,
        calls: BlockingCalls,
        pump: SolPump,
    ) -> None:
        self.settings = settings
        self.where = f"BMC {settings['bmc']}:{settings['port']}"
        self.sink = sink
        self.reactor = reactor
        self.calls = calls
        self.pump = pump
        self._lock = threading.Lock()
        self.console: Any = None
        self.opening = True
        self.closed = False
        self.closed_at = 0.0
        self.close_sent = False
        self.primed = False
        self._told_connected = False
        pump.hold(self)
        calls.call(self._open).addErrback(self._open_failed)

    # -- pool threads -------------------------------------------------------------------------------
    def _open(self) -> None:
        from pyghmi.ipmi.console import Console

        s = self.settings
        try:
            console = Console(
                bmc=s["bmc"],
                userid=s["userid"].encode(),
                password=s["password"].encode(),
                iohandler=self._from_bmc,
                port=s["port"],
            )
        finally:
            with self._lock:
                self.opening = False
        with self._lock:
            self.console = console

    # -- pyghmi's threads -----------------------------------------------------------------------------
    def _from_bmc(self, data: Any) -> None:
        self.reactor.callFromThread(self._deliver, data)

    def watch(self) -> bool:
        """Called by the pump between turns of pyghmi's loop; false once the pump may forget us."""
        with self._lock:
            console, closed, opening = self.console, self.closed, self.opening
        if not closed:
            if console is not None and not self._told_connected and console.connected and not console.broken:
                self._told_connected = True
                self.reactor.callFromThread(self._connected)
            return True
        if self.close_sent or (console is None and not opening) or (console is not None and console.broken):
            return False
        if console is None:
            return True
        if console.connected or time.monotonic() - self.closed_at > LATE_CLOSE:
            log.info("console at {where} activated after its client left: closing it", where=self.where)
            self.reactor.callFromThread(self._close_now, console)
            return False
        return True

    # -- the reactor thread -------------------------------------------------------------------------
    def _connected(self) -> None:
        if not self.closed:
            self.sink.connected()

    def _deliver(self, data: Any) -> None:
        if self.closed:
            return
        if isinstance(data, dict):
            if "error" in data:
                self.sink.ended(ActionError(502, "BMC_ERROR", f"{self.where}: {data['error']}"))
            elif "info" in data:
                self.sink.info(str(data["info"]))
            return
        self.sink.output(bytes(data))

    def _open_failed(self, failure: Failure) -> None:
        if not self.closed:
            self.sink.ended(ActionError(502, "BMC_ERROR", f"{self.where}: {failure.getErrorMessage()}"))

    def send(self, data: bytes) -> Deferred[None]:
        with self._lock:
            console = self.console
        assert console is not None, "send only once connected"
        return self.calls.call(self._send, console, data)

    def _send(self, console: Any, data: bytes) -> None:
        if not self.primed:
            # A BMC may take the first packet of a new activation for a retry of the previous
            # session's last one when their sequence numbers match (ipmi_sim does; pyghmi
            # starts every console at 1) and drop it. An empty packet spends that number.
            self.primed = True
            console.send_data(b"")
        console.send_data(data)

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self.closed_at = time.monotonic()
            console = self.console
        if console is not None and console.connected:
            self._close_now(console)
            return
        log.info("console at {where} left before the BMC activated it; closed once it does", where=self.where)

    def _close_now(self, console: Any) -> None:
        if self.close_sent:
            return
        self.close_sent = True

        def failed(failure: Failure) -> None:
            log.info("closing the console at {where}: {why}", where=self.where, why=failure.getErrorMessage())

        self.calls.call(console.close).addErrback(failed)
