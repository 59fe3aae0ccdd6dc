"""Socket options on peer connections: congestion control and the unsent-data low-water mark."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from kraken.core.config import ConfigError
from kraken.p2p import sockopts
from kraken.p2p.config import SchedulerSection, scheduler_config


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    server.close()
    yield client, accepted
    client.close()
    accepted.close()


def congestion(sock: socket.socket) -> str:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()


def test_tune_sets_both_options_on_the_socket_under_a_wrapping_transport(tcp_pair) -> None:
    sock, _ = tcp_pair
    tls_like = SimpleNamespace(transport=SimpleNamespace(socket=sock))
    default = congestion(sock)
    wanted = "reno" if default != "reno" else "cubic"
    sockopts.tune(tls_like, 65536, wanted)
    assert congestion(sock) == wanted
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT) == 65536


def test_tune_leaves_the_hosts_defaults_when_unset(tcp_pair) -> None:
    sock, _ = tcp_pair
    before = (congestion(sock), sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT))
    sockopts.tune(SimpleNamespace(socket=sock), 0, "")
    assert (congestion(sock), sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)) == before
    sockopts.tune(SimpleNamespace(), 65536, "reno")  # no socket underneath: nothing to do


def section(tcp_congestion: str = "") -> SchedulerSection:
    return SchedulerSection(tcp_congestion=tcp_congestion)


def test_config_takes_an_available_congestion_control() -> None:
    assert scheduler_config(section(tcp_congestion="reno")).tcp_congestion == "reno"
    assert scheduler_config(section()).tcp_congestion == ""


def test_config_refuses_an_unknown_congestion_control_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"scheduler\.tcp_congestion: 'no-such-cc' is not available"):
        scheduler_config(section(tcp_congestion="no-such-cc"))
