"""The TFTP server: a thin Twisted adapter around :mod:`kraken.netboot.tftp_transfer`.

Requests arrive on the listening port; each accepted read gets its own UDP port (its transfer
id, RFC 1350 section 4) and runs until the last block is acknowledged, the peer errs, or the
retries run out. Write requests are refused: the boot root is read-only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from kraken.netboot import tftp_wire
from kraken.netboot.bootroot import BootFileError, BootFiles
from kraken.netboot.tftp_transfer import ReadTransfer, Step
from kraken.netboot.tftp_wire import ErrorCode, Opcode

log = Logger(namespace="kraken.netboot.tftp")

Address = tuple[str, int]
MAX_DATAGRAM = 65536
SentCallback = Callable[[str, str, int], None]


class TransferProtocol(DatagramProtocol):
    """The socket of one transfer: talks only to the peer that asked."""

    def __init__(self, server: TFTPServer, transfer: ReadTransfer, peer: Address, name: str) -> None:
        self.server = server
        self.transfer = transfer
        self.peer = peer
        self.name = name
        self.timer: IDelayedCall | None = None
        self.port: IListeningPort | None = None

    def startProtocol(self) -> None:
        self.apply(self.transfer.start())

    def send(self, datagram: bytes, addr: Address) -> None:
        assert self.transport is not None
        self.transport.write(datagram, addr)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        addr = (str(addr[0]), int(addr[1]))
        if addr != self.peer:
            self.send(tftp_wire.encode_error(ErrorCode.UNKNOWN_TID, "unknown transfer id"), addr)
            return
        self.apply(self.transfer.receive(datagram))

    def expire(self) -> None:
        self.timer = None
        self.apply(self.transfer.expire())

    def apply(self, step: Step) -> None:
        for datagram in step.datagrams:
            self.send(datagram, self.peer)
        if step.done:
            self.finish()
        elif step.datagrams:
            if self.timer is not None and self.timer.active():
                self.timer.cancel()
            self.timer = self.server.clock.callLater(self.transfer.timeout, self.expire)

    def finish(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.transfer.source.close()
        if self.port is not None:
            self.port.stopListening()
            self.port = None
        self.server.finished(self)


class TFTPServer(DatagramProtocol):
    def __init__(
        self,
        files: BootFiles,
        reactor: IReactorUDP,
        clock: IReactorTime,
        interface: str = "",
        max_transfers: int = 256,
        max_per_client: int = 8,
        max_blksize: int = 1468,
        on_sent: SentCallback | None = None,
    ) -> None:
        self.files = files
        self.reactor = reactor
        self.clock = clock
        self.interface = interface
        self.max_transfers = max_transfers
        self.max_per_client = max_per_client
        self.max_blksize = max_blksize
        self.on_sent = on_sent
        self.transfers: set[TransferProtocol] = set()
        self.refused = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        peer = (str(addr[0]), int(addr[1]))
        try:
            packet = tftp_wire.decode(datagram)
        except tftp_wire.WireError as e:
            self.refuse(peer, ErrorCode.ILLEGAL_OPERATION, e.reason)
            return
        if not isinstance(packet, tftp_wire.Request):
            self.refuse(peer, ErrorCode.ILLEGAL_OPERATION, "expected a read request")
            return
        if packet.opcode == Opcode.WRQ:
            self.refuse(peer, ErrorCode.ACCESS_VIOLATION, "the boot root is read-only")
            return
        if len(self.transfers) >= self.max_transfers:
            self.refuse(peer, ErrorCode.NOT_DEFINED, "server busy, try again")
            return
        if sum(1 for t in self.transfers if t.peer[0] == peer[0]) >= self.max_per_client:
            self.refuse(peer, ErrorCode.NOT_DEFINED, f"at most {self.max_per_client} transfers per client")
            return
        try:
            source = self.files.open(packet.filename, peer[0])
        except BootFileError as e:
            code = ErrorCode.FILE_NOT_FOUND if e.missing else ErrorCode.ACCESS_VIOLATION
            self.refuse(peer, code, str(e))
            return
        transfer = ReadTransfer(source, packet.options, self.max_blksize)
        protocol = TransferProtocol(self, transfer, peer, packet.filename)
        self.transfers.add(protocol)
        protocol.port = self.reactor.listenUDP(0, protocol, self.interface, MAX_DATAGRAM)

    def refuse(self, peer: Address, code: ErrorCode, reason: str) -> None:
        self.refused += 1
        log.info("tftp refused {peer}: {reason}", peer=f"{peer[0]}:{peer[1]}", reason=reason)
        assert self.transport is not None
        self.transport.write(tftp_wire.encode_error(code, reason), peer)

    def finished(self, protocol: TransferProtocol) -> None:
        self.transfers.discard(protocol)
        transfer = protocol.transfer
        if not transfer.complete:
            log.info("tftp transfer of {name} to {peer} abandoned", name=protocol.name, peer=protocol.peer[0])
            return
        log.info(
            "tftp sent {name} to {peer} ({size} bytes)",
            name=protocol.name,
            peer=protocol.peer[0],
            size=transfer.source.size,
        )
        if self.on_sent is not None:
            self.on_sent(protocol.peer[0], protocol.name, transfer.source.size)
