"""The boot DHCP server: which client gets which lease and boot file, and its Twisted adapter.

:class:`DhcpResponder` is sans-IO: a request datagram in, a reply (bytes and where to send them)
out, or nothing. Only MACs that :attr:`leases` knows get an answer; every other request is
dropped with one log line per MAC, so an unknown machine on the boot network is never
configured. A PXE ROM is chain-loaded into iPXE (``undionly.kpxe`` on BIOS, ``ipxe.efi`` on
UEFI); iPXE itself (user class ``iPXE``) gets the URL of its node's script.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from kraken.core.offenders import OncePerOffender
from kraken.netboot import dhcp_wire
from kraken.netboot.dhcp_wire import BOOTREPLY, Message, MessageType, Option

log = Logger(namespace="kraken.netboot.dhcp")

SERVER_PORT = 67
CLIENT_PORT = 68
BIOS_LOADER = "undionly.kpxe"
UEFI_LOADER = "ipxe.efi"
UEFI_ARCHES = {6, 7, 9, 10, 11}  # RFC 4578 client system architectures booting EFI images


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    prefix: int
    hostname: str = ""
    router: str = ""
    lease_seconds: int = 3600


@dataclass(frozen=True)
class Reply:
    datagram: bytes
    address: tuple[str, int]


LeaseLookup = Callable[[str], Lease | None]
SeenCallback = Callable[[Lease, MessageType, bool], None]  # the bool: a PXE client (ROM or iPXE)


def loader_for(request: Message) -> str:
    arch = request.options.get(Option.CLIENT_ARCH, b"")
    if len(arch) >= 2 and struct.unpack(">H", arch[:2])[0] in UEFI_ARCHES:
        return UEFI_LOADER
    return BIOS_LOADER


def is_pxe_client(request: Message) -> bool:
    """A boot ROM or iPXE (vendor class ``PXEClient...``), not the booted OS's own DHCP client."""
    return request.options.get(Option.VENDOR_CLASS, b"").startswith(b"PXEClient")


def is_ipxe(request: Message) -> bool:
    return request.options.get(Option.USER_CLASS, b"").endswith(b"iPXE")


class DhcpResponder:
    def __init__(
        self,
        server_ip: str,
        leases: LeaseLookup,
        script_url: str,
        on_seen: SeenCallback | None = None,
    ) -> None:
        self.server_ip = server_ip
        self.leases = leases
        self.script_url = script_url
        self.on_seen = on_seen
        self.unknown = OncePerOffender()
        self.malformed = 0

    def handle(self, datagram: bytes) -> Reply | None:
        try:
            request = dhcp_wire.decode(datagram)
        except dhcp_wire.WireError as e:
            self.malformed += 1
            log.info("dhcp dropped a malformed datagram: {reason}", reason=e.reason)
            return None
        kind = request.message_type
        if request.op != dhcp_wire.BOOTREQUEST or kind not in (MessageType.DISCOVER, MessageType.REQUEST):
            return None
        lease = self.leases(request.mac)
        if lease is None:
            if self.unknown.first("unknown-mac", request.mac):
                log.info("dhcp ignores {mac}: no node boots from this server with that MAC", mac=request.mac)
            return None
        if kind == MessageType.REQUEST:
            server_id = request.ip_option(Option.SERVER_ID)
            if server_id is not None and server_id != self.server_ip:
                return None  # the client chose another server's offer
            wanted = request.ip_option(Option.REQUESTED_IP) or request.ciaddr
            if wanted != lease.ip:
                return self._reply(request, lease, MessageType.NAK)
        if self.on_seen is not None:
            self.on_seen(lease, kind, is_pxe_client(request))
        answer = MessageType.OFFER if kind == MessageType.DISCOVER else MessageType.ACK
        return self._reply(request, lease, answer)

    def _reply(self, request: Message, lease: Lease, kind: MessageType) -> Reply:
        options: dict[int, bytes] = {
            Option.MESSAGE_TYPE: bytes((kind,)),
            Option.SERVER_ID: ipaddress.IPv4Address(self.server_ip).packed,
        }
        reply = Message(BOOTREPLY, request.xid, request.chaddr, request.htype, flags=request.flags,
                        giaddr=request.giaddr, options=options)  # fmt: skip
        if kind != MessageType.NAK:
            network = ipaddress.IPv4Network(f"{lease.ip}/{lease.prefix}", strict=False)
            reply.yiaddr = lease.ip
            reply.siaddr = self.server_ip
            reply.file = self.script_url if is_ipxe(request) else loader_for(request)
            options[Option.SUBNET_MASK] = network.netmask.packed
            options[Option.LEASE_TIME] = struct.pack(">I", lease.lease_seconds)
            options[Option.TFTP_SERVER] = self.server_ip.encode("ascii")
            options[Option.BOOTFILE] = reply.file.encode("ascii")
            if lease.router:
                options[Option.ROUTER] = ipaddress.IPv4Address(lease.router).packed
            if lease.hostname:
                options[Option.HOSTNAME] = lease.hostname.encode("ascii", "replace")
        return Reply(dhcp_wire.encode(reply), self._destination(request, kind))

    def _destination(self, request: Message, kind: MessageType) -> tuple[str, int]:
        if request.giaddr != dhcp_wire.ZERO_IP:
            return (request.giaddr, SERVER_PORT)
        if request.ciaddr != dhcp_wire.ZERO_IP and kind != MessageType.NAK:
            return (request.ciaddr, CLIENT_PORT)
        # A client without an address cannot take unicast before it has the lease: broadcast.
        return ("255.255.255.255", CLIENT_PORT)


class DhcpProtocol(DatagramProtocol):
    """Listens on port 67 (of one interface, if ``device`` is set) and sends what the responder says."""

    def __init__(self, responder: DhcpResponder, device: str = "") -> None:
        self.responder = responder
        self.device = device

    def startProtocol(self) -> None:
        sock: Any = self.transport.getHandle()  # type: ignore[union-attr]  # a udp.Port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if self.device:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.device.encode())

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        try:
            reply = self.responder.handle(datagram)
        except Exception:
            log.failure("dhcp request from {addr} dropped", addr=addr)
            return
        if reply is not None and self.transport is not None:
            self.transport.write(reply.datagram, reply.address)

