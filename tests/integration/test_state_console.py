"""Serial consoles end to end: ipmi_sim's SOL wired to a TCP server that plays the machine's serial
line, kraken-state's console websocket, and ``kraken state console`` driven through pipes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.integration.state_rig import PARENT_ID, client, state_config, wait_for
from tests.integration.test_state_ipmi import NODE, Bmc, ipmi_node
from tests.support import REPO, ServerProcess, _env

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


class Cli:
    """``kraken state console`` with its stdin, stdout and stderr as pipes, read in threads."""

    def __init__(self, pki: Path, port: int, node: str, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kraken.cli", "state", "--url", f"https://127.0.0.1:{port}",
             "--pki", str(pki), "console", node, *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=_env(),
        )  # fmt: skip
        self.out = bytearray()
        self.err = bytearray()
        for stream, into in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, into), daemon=True).start()

    @staticmethod
    def _read(stream: IO[bytes] | None, into: bytearray) -> None:
        assert stream is not None
        while data := stream.read1(4096):  # type: ignore[attr-defined]
            into += data

    def type(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def end(self, timeout: float = 15) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


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


def connected(cli: Cli) -> bool:
    if cli.proc.poll() is not None:
        raise AssertionError(f"the CLI ended early: {cli.err.decode(errors='replace')}")
    return b"console connected" in cli.err


def test_console_carries_bytes_both_ways_and_one_session_per_node(
    pki: Path, engine: Any, serial: SerialLine, sol_bmc: Bmc
) -> None:
    proc, api = engine
    port = proc.port("http")
    api.post("/cfg/node", ipmi_node(sol_bmc.port, "secret"))
    first = Cli(pki, port, NODE)
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

        second = Cli(pki, port, NODE)
        assert second.end() == 1
        assert b"in use by client" in second.err, second.err

        first.type(b"~.")
        assert first.end() == 0, first.err
    finally:
        first.kill()
    # The slot is free again and the BMC's SOL was deactivated: a new session works.
    wait_for(lambda: not api.get("/consoles")["sessions"], what="the session to be forgotten")
    third = Cli(pki, port, NODE, "--linger", "1")
    try:
        wait_for(lambda: connected(third), what="a second console after the first quit")
        serial.send(b"again\r\n")
        wait_for(lambda: b"again" in third.out, what="output on the new session")
        assert third.proc.stdin is not None
        third.proc.stdin.close()  # end of input: the CLI lingers, then closes
        assert third.end() == 0, third.err
    finally:
        third.kill()


def test_wrong_password_unknown_node_and_no_bmc_are_clear_errors(
    pki: Path, engine: Any, serial: SerialLine, sol_bmc: Bmc
) -> None:
    proc, api = engine
    port = proc.port("http")
    api.post("/cfg/node", ipmi_node(sol_bmc.port, "wrong"))
    bad = Cli(pki, port, NODE)
    assert bad.end() == 1
    assert b"Incorrect password" in bad.err, bad.err

    unknown = Cli(pki, port, "eeeeeeee-0000-0000-0000-00000000ffff")
    assert unknown.end() == 1
    assert b"NODE_NOT_FOUND" in unknown.err, unknown.err

    sim = "eeeeeeee-0000-0000-0000-000000000002"
    api.post("/cfg/node", {"id": sim, "platform": "sim", "parentId": PARENT_ID})
    none = Cli(pki, port, sim)
    assert none.end() == 1
    assert b"NO_CONSOLE" in none.err and b"offers no serial console" in none.err, none.err

    bare = "eeeeeeee-0000-0000-0000-000000000003"
    api.post("/cfg/node", {"id": bare, "platform": "ipmi", "parentId": PARENT_ID})
    no_bmc = Cli(pki, port, bare)
    assert no_bmc.end() == 1
    assert b"NO_BMC" in no_bmc.err and b"IPMI.BMC extension" in no_bmc.err, no_bmc.err
    assert api.get("/health")["status"] == "ok"
