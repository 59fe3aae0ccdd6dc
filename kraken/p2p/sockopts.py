"""TCP options set on every peer-wire socket: how much unsent data the kernel may hold, and
which congestion control carries the pieces."""

from __future__ import annotations

import socket

AVAILABLE = "/proc/sys/net/ipv4/tcp_available_congestion_control"


def tcp_socket(transport: object) -> socket.socket | None:
    """The TCP socket under *transport* (a TLS transport wraps the TCP one), if there is one."""
    while transport is not None:
        sock = getattr(transport, "socket", None)
        if isinstance(sock, socket.socket):
            return sock
        transport = getattr(transport, "transport", None)
    return None


def tune(transport: object, send_lowat: int, congestion: str) -> None:
    """``send_lowat``: keep at most about that many unsent bytes in the kernel, so a piece
    written out has nearly left the host rather than waiting behind others (0: the kernel's
    default). ``congestion``: this connection's congestion control ("": the host's default)."""
    sock = tcp_socket(transport)
    if sock is None:
        return
    if send_lowat:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, send_lowat)
    if congestion:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion.encode())


def check_congestion_control(name: str) -> None:
    """Raise ValueError, saying why, unless this process may give its sockets *name*."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name.encode())
    except OSError as e:
        try:
            with open(AVAILABLE) as f:
                available = f.read().split()
        except OSError:
            available = []
        why = "not allowed for this process" if name in available else "not available in this kernel"
        listed = " ".join(available) or "?"
        raise ValueError(f"{name!r} is {why} ({e.strerror}); available: {listed}") from None
    finally:
        probe.close()
