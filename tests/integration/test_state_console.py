"""Serial consoles end to end: ipmi_sim's SOL wired to a TCP server that plays the machine's serial
line, kraken-state's console websocket, and ``kraken state console`` driven through pipes."""

from __future__ import annotations

import json
import os
import pty
import shutil
import socket
import subprocess
import termios
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor

from kraken.core.endpoints import connect
from kraken.core.tls import SeesTLSLayer
from tests.integration.state_rig import PARENT_ID, ConsoleCli, client, state_config, wait_for
from tests.integration.test_state_ipmi import NODE, Bmc, ipmi_node
from tests.support import ServerProcess, tls_settings

pytestmark = pytest.mark.skipif(
    shutil.which("ipmi_sim") is None, reason="needs ipmi_sim (apt package openipmi)"
)


class SerialLine:
    """The machine's side of the serial port: ipmi_sim connects here (``sol "tcp:..."``)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received = bytearray()
        self.conn: socket.socket | None = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        self.conn = conn
        while data := conn.recv(4096):
            self.received += data

    def send(self, data: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(data)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


@pytest.fixture
def serial() -> Iterator[SerialLine]:
    line = SerialLine()
    yield line
    line.close()


@pytest.fixture
def sol_bmc(tmp_path: Path, serial: SerialLine) -> Iterator[Bmc]:
    b = Bmc(tmp_path / "bmc", sol_port=serial.port)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def engine(pki: Path, tmp_path: Path, servers: ServerProcess.Pool) -> Any:
    config = state_config(
        pki, tmp_path, modules=["ipmi", "sim"],
        module_config={"ipmi": {"poll": 0, "timeout": 10}, "sim": {"latency": 0.05}},
        console={"connect": 10.0},
    )  # fmt: skip
    proc = servers.start("kraken-state", config, name="engine")
    return proc, client(pki, proc)


def sol_active(bmc: Bmc) -> bool | None:
    """Whether the BMC has SOL payload instance 1 active (Get Payload Activation Status)."""
    out = subprocess.run(
        ["ipmitool", "-I", "lanplus", "-H", "127.0.0.1", "-p", str(bmc.port), "-U", "admin", "-P", "secret",
         "-R", "1", "-N", "1", "raw", "0x06", "0x4a", "0x01"],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    fields = out.stdout.split()
    return None if len(fields) < 2 else int(fields[1], 16) & 1 == 1


def connected(cli: ConsoleCli) -> bool:
    if cli.proc.poll() is not None:
        raise AssertionError(f"the CLI ended early: {cli.err.decode(errors='replace')}")
    return b"console connected" in cli.err


def test_console_carries_bytes_both_ways_and_one_session_per_node(
    pki: Path, engine: Any, serial: SerialLine, sol_bmc: Bmc
) -> None:
    proc, api = engine
    port = proc.port("http")
    api.post("/cfg/node", ipmi_node(sol_bmc.port, "secret"))
    first = ConsoleCli(pki, port, NODE)
    try:
        wait_for(lambda: connected(first), what="the console to connect")
        wait_for(lambda: serial.conn is not None, what="ipmi_sim to connect the serial line")
        serial.send(b"login: ")
        wait_for(lambda: b"login: " in first.out, what="machine output on the CLI's stdout")
        first.type(b"root\r")
        wait_for(lambda: b"root\r" in serial.received, what="typed bytes on the serial line")
        where = api.get(f"/node/{NODE}/console")
        assert where["url"] == f"/node/{NODE}/console" and len(where["sessions"]) == 1
        assert where["sessions"][0]["holder"].startswith("client")

        second = ConsoleCli(pki, port, NODE)
        assert second.end() == 1
        assert b"in use by client" in second.err, second.err

        first.type(b"~.")
        assert first.end() == 0, first.err
    finally:
        first.kill()
    # The slot is free again and the BMC's SOL was deactivated: a new session works.
    wait_for(lambda: not api.get("/consoles")["sessions"], what="the session to be forgotten")
    wait_for(lambda: sol_active(sol_bmc) is False, what="ipmitool to see SOL deactivated")
    third = ConsoleCli(pki, port, NODE, "--linger", "1")
    try:
        wait_for(lambda: connected(third), what="a second console after the first quit")
        serial.send(b"again\r\n")
        wait_for(lambda: b"again" in third.out, what="output on the new session")
        assert third.proc.stdin is not None
        third.proc.stdin.close()  # end of input: the CLI lingers, then closes
        assert third.end() == 0, third.err
    finally:
        third.kill()
    on_a_terminal(pki, port, serial)


def on_a_terminal(pki: Path, port: int, serial: SerialLine) -> None:
    """With stdin a terminal the CLI goes raw (keys go out unbuffered, no line editing), quits on
    ``~.`` and leaves the terminal as it found it."""
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    tty = ConsoleCli(pki, port, NODE, stdin=slave)
    try:
        wait_for(lambda: connected(tty), what="the console on a terminal")
        os.write(master, b"abc\x03")  # no newline: a cooked terminal would hold it; Ctrl-C is a byte
        wait_for(lambda: b"abc\x03" in serial.received, what="raw keys on the serial line")
        assert termios.tcgetattr(slave)[3] & termios.ICANON == 0
        os.write(master, b"\r~.")
        assert tty.end() == 0, tty.err
        assert termios.tcgetattr(slave) == before
    finally:
        tty.kill()
        os.close(master)
        os.close(slave)


def test_wrong_password_unknown_node_and_no_bmc_are_clear_errors(
    pki: Path, engine: Any, serial: SerialLine, sol_bmc: Bmc
) -> None:
    proc, api = engine
    port = proc.port("http")
    api.post("/cfg/node", ipmi_node(sol_bmc.port, "wrong"))
    bad = ConsoleCli(pki, port, NODE)
    assert bad.end() == 1
    assert b"Incorrect password" in bad.err, bad.err

    unknown = ConsoleCli(pki, port, "eeeeeeee-0000-0000-0000-00000000ffff")
    assert unknown.end() == 1
    assert b"NODE_NOT_FOUND" in unknown.err, unknown.err

    sim = "eeeeeeee-0000-0000-0000-000000000002"
    api.post("/cfg/node", {"id": sim, "platform": "sim", "parentId": PARENT_ID})
    none = ConsoleCli(pki, port, sim)
    assert none.end() == 1
    assert b"NO_CONSOLE" in none.err and b"offers no serial console" in none.err, none.err

    bare = "eeeeeeee-0000-0000-0000-000000000003"
    api.post("/cfg/node", {"id": bare, "platform": "ipmi", "parentId": PARENT_ID})
    no_bmc = ConsoleCli(pki, port, bare)
    assert no_bmc.end() == 1
    assert b"NO_BMC" in no_bmc.err and b"IPMI.BMC extension" in no_bmc.err, no_bmc.err
    assert api.get("/health")["status"] == "ok"


class ConsoleWatcher(SeesTLSLayer, WebSocketClientProtocol):  # type: ignore[misc]
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.messages.append(payload if isBinary else json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.closed.callback(code)


@pytest_twisted.inlineCallbacks
def test_the_websocket_itself_refuses_unknown_nodes_with_a_message_and_a_close_code(
    pki: Path, engine: Any
) -> Any:
    proc, _ = engine
    port = proc.port("ws")
    for path, code, status in (
        ("/node/eeeeeeee-0000-0000-0000-00000000ffff/console", "NODE_NOT_FOUND", 4404),
        ("/node/not-a-node/console", "BAD_NODE_ID", 4400),
    ):
        factory = WebSocketClientFactory(f"wss://127.0.0.1:{port}{path}")
        factory.protocol = ConsoleWatcher
        factory.messages, factory.closed = [], defer.Deferred()
        yield connect(reactor, "127.0.0.1", port, factory, tls_settings(pki, "client"), ["state"])
        closed = yield factory.closed
        assert closed == status
        assert [m["error"]["code"] for m in factory.messages] == [code]


class Leaver(SeesTLSLayer, WebSocketClientProtocol):  # type: ignore[misc]
    def onOpen(self) -> None:
        self.sendClose(1000, "changed my mind")

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.closed.callback(code)


@pytest_twisted.inlineCallbacks
def test_clients_that_leave_while_the_bmc_logs_in_do_not_block_the_next_session(
    pki: Path, engine: Any, serial: SerialLine, sol_bmc: Bmc
) -> Any:
    from twisted.internet.threads import deferToThread

    proc, api = engine
    yield deferToThread(api.post, "/cfg/node", ipmi_node(sol_bmc.port, "secret"))
    port = proc.port("ws")
    for _ in range(3):
        factory = WebSocketClientFactory(f"wss://127.0.0.1:{port}/node/{NODE}/console")
        factory.protocol = Leaver
        factory.closed = defer.Deferred()
        yield connect(reactor, "127.0.0.1", port, factory, tls_settings(pki, "client"), ["state"])
        yield factory.closed
    # ipmitool, an independent client, sees the BMC's SOL payload deactivated again.
    yield deferToThread(wait_for, lambda: sol_active(sol_bmc) is False, 10.0, "SOL to be deactivated")
    cli = ConsoleCli(pki, proc.port("http"), NODE)
    try:
        yield deferToThread(wait_for, lambda: connected(cli), 20.0, "a console after three quick leavers")
        cli.type(b"~.")
        assert (yield deferToThread(cli.end)) == 0
    finally:
        cli.kill()
