"""The TFTP server on loopback against tftp-hpa and busybox tftp, and against garbage."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.threads import deferToThread

from kraken.netboot import tftp_wire
from kraken.netboot.bootroot import BootFiles
from kraken.netboot.tftp_server import MAX_DATAGRAM, TFTPServer
from kraken.netboot.tftp_wire import Error, ErrorCode, Opcode, Request

pytestmark = pytest.mark.skipif(
    shutil.which("tftp") is None or shutil.which("busybox") is None,
    reason="needs tftp-hpa and busybox (scripts/setup.sh installs them)",
)


class Probe(DatagramProtocol):
    def __init__(self) -> None:
        self.replies: list[Deferred[bytes]] = []

    def ask(self, datagram: bytes, port: int) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.replies.append(d)
        assert self.transport is not None
        self.transport.write(datagram, ("127.0.0.1", port))
        return d

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.replies:
            self.replies.pop(0).callback(datagram)


@pytest.fixture
def tftp(tmp_path: Path) -> Any:
    root = tmp_path / "root"
    root.mkdir()
    sent: list[tuple[str, str, int]] = []
    server = TFTPServer(
        BootFiles(root, lambda ip: b"#!ipxe\necho hi\n" if ip == "127.0.0.1" else None),
        reactor, reactor, interface="127.0.0.1", on_sent=lambda *a: sent.append(a),
    )  # fmt: skip
    port = reactor.listenUDP(0, server, "127.0.0.1", MAX_DATAGRAM)
    yield root, port.getHost().port, server, sent
    port.stopListening()


def run(*args: str) -> Any:
    return deferToThread(subprocess.run, args, capture_output=True, text=True, timeout=30)


@pytest_twisted.inlineCallbacks
def test_real_clients_fetch_files_and_scripts_byte_identical(tftp: Any, tmp_path: Path) -> Any:
    root, port, server, sent = tftp
    data = os.urandom(1_000_000)
    (root / "img").write_bytes(data)
    out = tmp_path / "out"
    yield run("tftp", "-m", "binary", "127.0.0.1", str(port), "-c", "get", "img", str(out))
    assert out.read_bytes() == data
    out.unlink()
    yield run("busybox", "tftp", "-g", "-b", "8192", "-r", "img", "-l", str(out), "127.0.0.1", str(port))
    assert out.read_bytes() == data
    yield run("tftp", "-m", "binary", "127.0.0.1", str(port), "-c", "get", "kraken.ipxe", str(out))
    assert out.read_bytes() == b"#!ipxe\necho hi\n"
    assert [(name, size) for _ip, name, size in sent] == [("img", len(data))] * 2 + [("kraken.ipxe", 15)]
    assert not server.transfers


@pytest_twisted.inlineCallbacks
def test_garbage_writes_and_missing_files_get_tftp_errors(tftp: Any) -> Any:
    _root, port, server, _sent = tftp
    probe = Probe()
    listening = reactor.listenUDP(0, probe, "127.0.0.1", MAX_DATAGRAM)
    try:
        cases = [
            (b"\x00", ErrorCode.ILLEGAL_OPERATION),
            (b"\x00\x01nofile", ErrorCode.ILLEGAL_OPERATION),
            (tftp_wire.encode_request(Request(Opcode.WRQ, "x", "octet")), ErrorCode.ACCESS_VIOLATION),
            (tftp_wire.encode_request(Request(Opcode.RRQ, "absent", "octet")), ErrorCode.FILE_NOT_FOUND),
            (tftp_wire.encode_request(Request(Opcode.RRQ, "../x", "octet")), ErrorCode.ACCESS_VIOLATION),
            (tftp_wire.encode_ack(1), ErrorCode.ILLEGAL_OPERATION),
        ]
        for datagram, code in cases:
            reply = tftp_wire.decode((yield probe.ask(datagram, port)))
            assert isinstance(reply, Error) and reply.code == code, (datagram, reply)
        assert server.refused == len(cases) and not server.transfers
    finally:
        listening.stopListening()


@pytest_twisted.inlineCallbacks
def test_one_client_cannot_hold_more_than_its_share_of_transfers(tftp: Any) -> Any:
    root, port, server, _sent = tftp
    (root / "big").write_bytes(os.urandom(100_000))
    probe = Probe()
    listening = reactor.listenUDP(0, probe, "127.0.0.1", MAX_DATAGRAM)
    try:
        request = tftp_wire.encode_request(Request(Opcode.RRQ, "big", "octet"))
        for _ in range(server.max_per_client):
            first = tftp_wire.decode((yield probe.ask(request, port)))
            assert first == tftp_wire.Data(1, (root / "big").read_bytes()[:512])
        refused = tftp_wire.decode((yield probe.ask(request, port)))
        assert isinstance(refused, Error) and "per client" in refused.message
        assert len(server.transfers) == server.max_per_client
    finally:
        listening.stopListening()
        for transfer in list(server.transfers):
            transfer.finish()
