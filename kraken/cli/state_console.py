"""``kraken state console NODE``: the terminal joined to a node's serial console (IPMI SOL).

What is typed goes to the console; what the machine prints comes back. On a terminal stdin is
put in raw mode (every key goes to the machine, Ctrl-C included); ``~.`` at the start of a line
quits and ``~~`` sends one ``~`` (as in ssh). Pipes work too: stdin is sent as it comes, and at
its end the console closes after ``--linger`` seconds. Status lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from kraken.core.tls import SeesTLSLayer, TLSConfigError, TLSSettings

EXAMPLE = """examples:
  kraken state console node17            # on a terminal: ~. at line start quits
  printf 'root\\r' | kraken state console node17 --linger 3"""


class EscapeFilter:
    """Finds ``ESC .`` (quit) at the start of a line in typed bytes; ``ESC ESC`` sends one ESC.

    ``feed`` returns the bytes to send and whether to quit; an escape character just after a
    line start is held until the next byte says what it is.
    """

    def __init__(self, escape: bytes = b"~") -> None:
        self.escape = escape[0]
        self.line_start = True
        self.pending = False

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        out = bytearray()
        for byte in data:
            if self.pending:
                self.pending = False
                if byte == ord("."):
                    return bytes(out), True
                if byte != self.escape:
                    out.append(self.escape)
                out.append(byte)
                self.line_start = byte in b"\r\n"
                continue
            if self.line_start and byte == self.escape:
                self.pending = True
                continue
            out.append(byte)
            self.line_start = byte in b"\r\n"
        return bytes(out), False


class ConsoleSocket(SeesTLSLayer, WebSocketClientProtocol):  # type: ignore[misc]
    factory: ConsoleSocketFactory

    def onOpen(self) -> None:
        self.factory.terminal.opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N803 - autobahn names
        if isBinary:
            self.factory.terminal.output(payload)
        else:
            self.factory.terminal.status(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N803
        self.factory.terminal.closed(code, reason)


class ConsoleSocketFactory(WebSocketClientFactory):
    protocol = ConsoleSocket  # type: ignore[assignment]

    def __init__(self, url: str, terminal: Terminal) -> None:
        super().__init__(url)
        self.terminal = terminal


class Terminal:
    """Joins stdin/stdout (``write_out``, ``write_err``) and the console websocket."""

    def __init__(
        self,
        write_out: Callable[[bytes], None],
        write_err: Callable[[str], None],
        escape: bytes,
        raw: bool,
        call_later: Callable[..., Any],
        linger: float,
    ) -> None:
        self.write_out = write_out
        self.write_err = write_err
        self.filter = EscapeFilter(escape)
        self.raw = raw
        self.call_later = call_later
        self.linger = linger
        self.socket: ConsoleSocket | None = None
        self.held = bytearray()  # typed before the socket opened
        self.done: Deferred[int] = Deferred()
        self.error: str | None = None
        self.quitting = False

    def say(self, line: str) -> None:
        self.write_err(line + ("\r\n" if self.raw else "\n"))

    def opened(self, socket: ConsoleSocket) -> None:
        self.socket = socket
        if self.held:
            socket.sendMessage(bytes(self.held), isBinary=True)
            self.held.clear()

    def typed(self, data: bytes) -> None:
        if self.quitting:
            return
        data, quit_now = self.filter.feed(data)
        if data:
            if self.socket is not None:
                self.socket.sendMessage(data, isBinary=True)
            else:
                self.held += data
        if quit_now:
            self.quit()

    def stdin_closed(self) -> None:
        self.call_later(self.linger, self.quit)

    def quit(self) -> None:
        self.quitting = True
        if self.socket is not None:
            self.socket.sendClose(1000, "quit")
        else:
            self.finish(0)

    def output(self, data: bytes) -> None:
        self.write_out(data)

    def status(self, payload: bytes) -> None:
        try:
            msg = json.loads(payload)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        if isinstance(msg.get("error"), dict):
            error = msg["error"]
            self.error = f"{error.get('code', 'ERROR')}: {error.get('message', '')}"
        elif msg.get("event") == "connected":
            self.say("[console connected; ~. at line start quits]")
        elif msg.get("event") == "dropped":
            self.say(f"[{msg.get('bytes')} bytes of output dropped: this terminal read too slowly]")
        elif msg.get("event") == "info":
            self.say(f"[{msg.get('message')}]")

    def closed(self, code: int | None, reason: str | None) -> None:
        if self.error is None and not self.quitting and code not in (1000, None):
            self.error = reason or f"the console closed (code {code})"
        if self.error is None and not self.quitting and self.socket is None:
            self.error = reason or "could not open the console websocket"
        if self.error is not None:
            self.say(f"kraken state console: {self.error}")
        elif not self.quitting:
            self.say("[console closed]")
        self.finish(1 if self.error is not None else 0)

    def finish(self, code: int) -> None:
        if not self.done.called:
            self.done.callback(code)


class StdinReader(Protocol):
    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal

    def dataReceived(self, data: bytes) -> None:
        self.terminal.typed(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.terminal.stdin_closed()


def run(args: argparse.Namespace, where: dict[str, Any]) -> int:
    """Connect to the console websocket *where* (``GET /node/{id}/console``) until it ends."""
    from twisted.internet import stdio, task

    from kraken.core.endpoints import connect

    pki = args.pki
    try:
        tls = TLSSettings(
            args.ca or os.path.join(pki, "ca.pem"),
            args.cert or os.path.join(pki, f"{args.cert_name}.pem"),
            args.key or os.path.join(pki, f"{args.cert_name}.key"),
        )
    except TLSConfigError as e:
        print(f"kraken state console: {e}", file=sys.stderr)
        return 1
    host = urlsplit(args.url).hostname or "127.0.0.1"
    port = int(where["port"])
    raw = sys.stdin.isatty() and not args.no_raw
    result = {"code": 1}

    def main(reactor: Any) -> Deferred[None]:
        def err(text: str) -> None:
            sys.stderr.write(text)
            sys.stderr.flush()

        terminal = Terminal(
            lambda b: out.write(b), err, args.escape.encode(), raw, reactor.callLater, args.linger
        )
        out = stdio.StandardIO(StdinReader(terminal), reactor=reactor)
        factory = ConsoleSocketFactory(f"wss://{host}:{port}{where['url']}", terminal)

        def unreachable(failure: Failure) -> None:
            terminal.say(f"kraken state console: cannot reach {host}:{port}: {failure.getErrorMessage()}")
            terminal.finish(1)

        connect(reactor, host, port, factory, tls, ["state"]).addErrback(unreachable)

        def ended(code: int) -> None:
            result["code"] = code

        return terminal.done.addCallback(ended)

    saved = None
    if raw:
        import termios
        import tty

        saved = termios.tcgetattr(sys.stdin.fileno())
        tty.setraw(sys.stdin.fileno())
    try:
        task.react(lambda reactor: main(reactor), ())  # exits the process
    except SystemExit:
        pass
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
    return result["code"]
