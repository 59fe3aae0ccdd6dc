"""SendWatch on a Clock: bytes the peer acknowledges keep a response alive however slow, a peer
that takes nothing is cut after the timeout, and "delivered" means nothing left in the socket."""

from __future__ import annotations

import socket
import time

from twisted.internet.task import Clock

from kraken.core.sendwatch import SendState, SendWatch, send_state


class Peer:
    """What the socket would say: bytes queued for the peer and bytes it acknowledged."""

    def __init__(self, queued: int = 0) -> None:
        self.queued = queued
        self.acked = 0
        self.known = True

    def take(self, n: int) -> None:
        self.queued -= n
        self.acked += n

    def probe(self) -> SendState | None:
        return SendState(self.queued, self.acked) if self.known else None


def watch(peer: Peer, timeout: float = 5.0) -> tuple[Clock, SendWatch, list[str]]:
    clock, events = Clock(), []
    w = SendWatch(
        clock, peer.probe, timeout, lambda: events.append("stall"), lambda: events.append("progress"),
        interval=1.0,
    )
    return clock, w, events


def run(clock: Clock, seconds: float) -> None:
    """Advance in steps shorter than the watch's interval, as a reactor would."""
    for _ in range(round(seconds / 0.25)):
        clock.advance(0.25)


def test_a_slow_peer_that_takes_bytes_is_never_cut() -> None:
    peer = Peer(queued=1_000_000)
    clock, w, events = watch(peer)
    w.blocked()
    for _ in range(60):  # a minute at 100 bytes every 2 s: far past the 5 s timeout
        run(clock, 2)
        peer.take(100)
    assert "stall" not in events and w.watching
    assert events.count("progress") == 59  # the last bytes are seen at the next look


def test_a_peer_that_stops_taking_bytes_is_cut_after_the_timeout() -> None:
    peer = Peer(queued=1_000_000)
    clock, w, events = watch(peer)
    w.blocked()
    run(clock, 3.5)
    peer.take(100)  # seen at the look at 4 s
    run(clock, 5)
    assert "stall" not in events  # 5 s from the last progress seen, not from the start
    run(clock, 0.5)
    assert events[-1] == "stall" and not w.watching
    run(clock, 60)
    assert events.count("stall") == 1


def test_delivered_once_the_socket_holds_nothing_for_the_peer() -> None:
    peer = Peer(queued=300)
    clock, w, _ = watch(peer)
    delivered: list[float] = []
    w.when_delivered(lambda: delivered.append(clock.seconds()))
    for _ in range(3):
        clock.advance(1)
        peer.take(100)
    clock.advance(1)
    assert delivered == [4.0] and not w.watching
    w.when_delivered(lambda: delivered.append(clock.seconds()))  # nothing owed: at once
    assert delivered == [4.0, 4.0]


def test_not_delivered_while_the_transport_is_full_and_forgotten_on_request() -> None:
    peer = Peer(queued=0)
    clock, w, events = watch(peer)
    w.blocked()  # the transport still holds bytes the socket did not take
    delivered: list[str] = []
    w.when_delivered(lambda: delivered.append("x"))
    run(clock, 2)
    assert not delivered
    w.unblocked()  # ... and now it has them all, and the peer acknowledged them
    assert delivered == ["x"] and not w.watching
    peer.queued = 100
    w.when_delivered(lambda: delivered.append("y"))
    w.forget_delivered()  # e.g. the next request's headers came in meanwhile
    peer.take(100)
    run(clock, 2)
    assert delivered == ["x"] and not w.watching and "stall" not in events


def test_without_socket_state_the_transport_draining_is_the_progress() -> None:
    peer = Peer()
    peer.known = False
    clock, w, events = watch(peer)
    for _ in range(10):
        w.blocked()
        clock.advance(4)
        w.unblocked()
    assert "stall" not in events
    w.blocked()
    clock.advance(5)
    assert events[-1] == "stall"


def test_send_state_reads_a_real_socket() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    with server, client, conn:
        conn.setblocking(False)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent = 0
        try:
            while True:
                sent += conn.send(b"x" * 65536)
        except BlockingIOError:
            pass
        time.sleep(0.1)  # the peer's window closed: nothing moves any more
        state = send_state(conn)
        assert state is not None and state.queued > 0
        if state.acked is not None:  # Linux: every byte is either acknowledged or queued
            assert state.acked + state.queued == sent
    assert send_state(None) is None
