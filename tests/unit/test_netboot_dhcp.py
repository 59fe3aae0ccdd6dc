"""The DHCP codec and the boot responder's answers, without sockets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kraken.netboot import dhcp_wire
from kraken.netboot.dhcp_server import BIOS_LOADER, UEFI_LOADER, DhcpResponder, Lease
from kraken.netboot.dhcp_wire import BOOTREQUEST, Message, MessageType, Option

MAC = bytes.fromhex("02aabbcc0001")
LEASE = Lease("02:aa:bb:cc:00:01", "10.9.0.21", 24, hostname="n1", router="10.9.0.1")
SCRIPT_URL = "http://10.9.0.1:8080/boot/kraken.ipxe"


def request(kind: MessageType, **options: bytes) -> bytes:
    opts = {Option.MESSAGE_TYPE: bytes((kind,))}
    opts.update({Option[name.upper()]: value for name, value in options.items()})
    return dhcp_wire.encode(Message(BOOTREQUEST, 0x1234, MAC, options=dict(opts)))


def responder(seen: list[tuple[str, MessageType, bool]] | None = None) -> DhcpResponder:
    def on_seen(lease: Lease, kind: MessageType, pxe_client: bool) -> None:
        if seen is not None:
            seen.append((lease.mac, kind, pxe_client))

    return DhcpResponder("10.9.0.1", {LEASE.mac: LEASE}.get, SCRIPT_URL, on_seen)


def answer(raw: bytes, r: DhcpResponder | None = None) -> tuple[Message, tuple[str, int]]:
    reply = (r or responder()).handle(raw)
    assert reply is not None
    return dhcp_wire.decode(reply.datagram), reply.address


def test_message_round_trip() -> None:
    message = Message(BOOTREQUEST, 7, MAC, ciaddr="10.0.0.2", file="x", options={Option.HOSTNAME: b"h" * 300})
    decoded = dhcp_wire.decode(dhcp_wire.encode(message))
    assert decoded == message and decoded.mac == "02:aa:bb:cc:00:01"


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"\x01" * 100, "shorter"),
        (b"\x03" + bytes(235) + dhcp_wire.MAGIC + b"\xff", "op"),
        (b"\x01\x01\x00" + bytes(233) + dhcp_wire.MAGIC + b"\xff", "hardware address length"),
        (b"\x01\x01\x06" + bytes(233) + b"nope" + b"\xff", "magic"),
        (b"\x01\x01\x06" + bytes(233) + dhcp_wire.MAGIC + b"\x35\x05\x01", "past the end"),
        (b"\x01\x01\x06" + bytes(233) + dhcp_wire.MAGIC + b"\x35\x01\x01", "END"),
    ],
)
def test_malformed_messages_raise_one_error_that_says_why(raw: bytes, reason: str) -> None:
    with pytest.raises(dhcp_wire.WireError, match=reason):
        dhcp_wire.decode(raw)


@given(st.binary(max_size=400))
def test_any_datagram_decodes_or_raises_wire_error(raw: bytes) -> None:
    try:
        dhcp_wire.decode(raw)
    except dhcp_wire.WireError:
        pass


@given(st.binary(min_size=0, max_size=120))
def test_the_responder_never_raises_on_a_valid_header_with_garbage_options(tail: bytes) -> None:
    raw = b"\x01\x01\x06\x00" + bytes(232) + MAC + bytes(2) + dhcp_wire.MAGIC + tail
    responder().handle(raw.ljust(240, b"\0"))


def test_a_pxe_rom_is_offered_its_lease_and_the_ipxe_loader() -> None:
    seen: list[tuple[str, MessageType, bool]] = []
    offer, address = answer(request(MessageType.DISCOVER), responder(seen))
    assert offer.message_type == MessageType.OFFER and offer.yiaddr == "10.9.0.21"
    assert offer.file == BIOS_LOADER and offer.siaddr == "10.9.0.1"
    assert offer.ip_option(Option.SUBNET_MASK) == "255.255.255.0"
    assert offer.ip_option(Option.ROUTER) == "10.9.0.1" and offer.options[Option.HOSTNAME] == b"n1"
    assert offer.options[Option.TFTP_SERVER] == b"10.9.0.1"
    assert address == ("255.255.255.255", 68) and seen == [(LEASE.mac, MessageType.DISCOVER, False)]
    answer(request(MessageType.DISCOVER, vendor_class=b"PXEClient:Arch:00000:UNDI:002001"), responder(seen))
    assert seen[-1] == (LEASE.mac, MessageType.DISCOVER, True)


def test_uefi_gets_the_efi_loader_and_ipxe_gets_its_script() -> None:
    efi, _ = answer(request(MessageType.DISCOVER, client_arch=struct.pack(">H", 7)))
    assert efi.file == UEFI_LOADER
    ipxe, _ = answer(request(MessageType.DISCOVER, user_class=b"iPXE"))
    assert ipxe.file == SCRIPT_URL and ipxe.options[Option.BOOTFILE] == SCRIPT_URL.encode()


def test_a_request_for_the_lease_is_acked_and_for_another_address_naked() -> None:
    ours = request(MessageType.REQUEST, requested_ip=bytes([10, 9, 0, 21]), server_id=bytes([10, 9, 0, 1]))
    ack, _ = answer(ours)
    assert ack.message_type == MessageType.ACK and ack.yiaddr == "10.9.0.21"
    nak, _ = answer(request(MessageType.REQUEST, requested_ip=bytes([10, 9, 0, 99])))
    assert nak.message_type == MessageType.NAK and nak.yiaddr == "0.0.0.0"


def test_unknown_macs_and_other_servers_requests_get_nothing() -> None:
    r = DhcpResponder("10.9.0.1", {}.get, SCRIPT_URL)
    assert r.handle(request(MessageType.DISCOVER)) is None
    other = request(MessageType.REQUEST, requested_ip=bytes([10, 9, 0, 21]), server_id=bytes([10, 9, 0, 2]))
    assert responder().handle(other) is None
    assert responder().handle(request(MessageType.RELEASE)) is None
