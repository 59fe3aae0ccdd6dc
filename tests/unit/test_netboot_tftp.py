"""The TFTP codec and read-transfer state machine, driven without sockets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kraken.netboot import tftp_wire
from kraken.netboot.bootroot import SCRIPT_NAME, BootFileError, BootFiles, confined
from kraken.netboot.tftp_transfer import MAX_RETRIES, BytesSource, ReadTransfer
from kraken.netboot.tftp_wire import Ack, Data, Error, ErrorCode, Opcode, Request


def data_of(datagram: bytes) -> Data:
    packet = tftp_wire.decode(datagram)
    assert isinstance(packet, Data)
    return packet


def test_request_round_trip_keeps_options_lowercased() -> None:
    options = {"BLKSIZE": "1432", "tsize": "0"}
    raw = tftp_wire.encode_request(Request(Opcode.RRQ, "boot/x.ipxe", "octet", options))
    lowered = {"blksize": "1432", "tsize": "0"}
    assert tftp_wire.decode(raw) == Request(Opcode.RRQ, "boot/x.ipxe", "octet", lowered)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"\x00\x01", "shorter"),
        (b"\x00\x01file\x00octet", "NUL-terminated"),
        (b"\x00\x01file\x00bogus\x00", "unknown transfer mode"),
        (b"\x00\x01\x00octet\x00", "filename"),
        (b"\x00\x04\x00\x01\x00", "exactly 4 bytes"),
        (b"\x00\x09\x00\x01", "unknown opcode"),
        (b"\x00\x01fi\xffle\x00octet\x00", "ASCII"),
    ],
)
def test_malformed_datagrams_raise_one_error_that_says_why(raw: bytes, reason: str) -> None:
    with pytest.raises(tftp_wire.WireError, match=reason):
        tftp_wire.decode(raw)


@given(st.binary(max_size=600))
def test_any_datagram_decodes_or_raises_wire_error(raw: bytes) -> None:
    try:
        tftp_wire.decode(raw)
    except tftp_wire.WireError:
        pass


def test_a_file_goes_in_default_blocks_and_ends_with_a_short_one() -> None:
    payload = os.urandom(1300)
    transfer = ReadTransfer(BytesSource(payload), {})
    got = b""
    step = transfer.start()
    while True:
        packet = data_of(step.datagrams[0])
        got += packet.payload
        step = transfer.receive(tftp_wire.encode_ack(packet.block))
        if step.done:
            break
    assert got == payload and transfer.complete


def test_an_exact_multiple_of_the_block_size_ends_with_an_empty_block() -> None:
    transfer = ReadTransfer(BytesSource(b"x" * 1024), {})
    blocks = [data_of(transfer.start().datagrams[0])]
    blocks.append(data_of(transfer.receive(tftp_wire.encode_ack(1)).datagrams[0]))
    blocks.append(data_of(transfer.receive(tftp_wire.encode_ack(2)).datagrams[0]))
    assert [len(b.payload) for b in blocks] == [512, 512, 0]
    assert transfer.receive(tftp_wire.encode_ack(3)).done and transfer.complete


def test_options_are_acknowledged_and_applied() -> None:
    transfer = ReadTransfer(BytesSource(b"y" * 5000), {"blksize": "1432", "tsize": "0", "timeout": "3"})
    oack = transfer.start().datagrams[0]
    assert oack == tftp_wire.encode_oack({"blksize": "1432", "tsize": "5000", "timeout": "3"})
    first = data_of(transfer.receive(tftp_wire.encode_ack(0)).datagrams[0])
    assert (first.block, len(first.payload), transfer.timeout) == (1, 1432, 3.0)


def test_blksize_is_capped_by_the_server_and_nonsense_options_are_ignored() -> None:
    transfer = ReadTransfer(BytesSource(b"z"), {"blksize": "65464", "timeout": "0", "windowsize": "x"}, 1468)
    assert transfer.accepted == {"blksize": "1468"}
    assert ReadTransfer(BytesSource(b"z"), {"blksize": "4"}).accepted == {}


def test_a_duplicate_ack_never_retransmits_only_the_timer_does() -> None:
    transfer = ReadTransfer(BytesSource(b"a" * 2000), {})
    transfer.start()
    second = transfer.receive(tftp_wire.encode_ack(1)).datagrams[0]
    assert transfer.receive(tftp_wire.encode_ack(1)).datagrams == ()
    assert transfer.expire().datagrams == (second,)


def test_retries_run_out_and_the_transfer_ends_incomplete() -> None:
    transfer = ReadTransfer(BytesSource(b"a"), {})
    transfer.start()
    steps = [transfer.expire() for _ in range(MAX_RETRIES + 1)]
    assert all(s.datagrams for s in steps[:-1]) and steps[-1].done and not transfer.complete


def test_block_numbers_roll_over_past_65535() -> None:
    transfer = ReadTransfer(BytesSource(b"b" * (8 * 65537)), {"blksize": "8"})
    transfer.start()
    step = None
    for block in range(0, 65537):
        step = transfer.receive(tftp_wire.encode_ack(block & 0xFFFF))
    assert step is not None and data_of(step.datagrams[0]).block == 65537 & 0xFFFF


def test_a_peer_error_or_a_wrong_packet_ends_the_transfer() -> None:
    transfer = ReadTransfer(BytesSource(b"a"), {})
    transfer.start()
    assert transfer.receive(tftp_wire.encode_error(ErrorCode.DISK_FULL, "full")).done
    other = ReadTransfer(BytesSource(b"a"), {})
    other.start()
    step = other.receive(tftp_wire.encode_data(1, b"x"))
    packet = tftp_wire.decode(step.datagrams[0])
    assert step.done and isinstance(packet, Error) and packet.code == ErrorCode.ILLEGAL_OPERATION


def test_ack_block_field_decodes() -> None:
    assert tftp_wire.decode(tftp_wire.encode_ack(7)) == Ack(7)


def test_names_that_leave_the_boot_root_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok").write_bytes(b"ok")
    (tmp_path / "secret").write_bytes(b"no")
    (root / "link").symlink_to(tmp_path / "secret")
    assert confined(root, "/sub/ok") == (root / "sub" / "ok").resolve()
    for name in ["../secret", "sub/../../secret", "link", "a\0b", "sub\\..\\..\\secret", "/"]:
        with pytest.raises(BootFileError) as caught:
            confined(root, name)
        assert not caught.value.missing, name
    with pytest.raises(BootFileError) as missing:
        confined(root, "sub/none")
    assert missing.value.missing


def test_the_script_name_renders_the_clients_own_script(tmp_path: Path) -> None:
    files = BootFiles(tmp_path, lambda ip: b"#!ipxe\n" if ip == "10.0.0.5" else None)
    source = files.open(SCRIPT_NAME, "10.0.0.5")
    assert source.read(0, 100) == b"#!ipxe\n"
    with pytest.raises(BootFileError, match="no node boots"):
        files.open(SCRIPT_NAME, "10.0.0.6")
