"""Console sessions without I/O: limits per node and per server, idle and connect timeouts, the
bound on output held for a slow reader and on input waiting for the BMC; the CLI's escape filter."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from kraken.cli.state_console import EscapeFilter
from kraken.state.console import ConsoleLimits, ConsoleManager, ConsoleSession
from kraken.state.modules.base import ActionError, ConsoleSink

NODE = "cccccccc-0000-0000-0000-000000000001"
OTHER = "cccccccc-0000-0000-0000-000000000002"


class Client:
    def __init__(self) -> None:
        self.can_write = True
        self.data: list[bytes] = []
        self.notes: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    def writable(self) -> bool:
        return self.can_write and self.closed is None

    def send_bytes(self, data: bytes) -> None:
        assert self.closed is None
        self.data.append(data)

    def send_json(self, body: dict[str, Any]) -> None:
        assert self.closed is None
        self.notes.append(body)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def error(self) -> str | None:
        errors = [n["error"]["code"] for n in self.notes if "error" in n]
        return errors[-1] if errors else None


class Link:
    def __init__(self, sink: ConsoleSink) -> None:
        self.sink = sink
        self.sends: list[tuple[bytes, Deferred[None]]] = []
        self.closed = False

    def send(self, data: bytes) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.sends.append((data, d))
        return d

    def close(self) -> None:
        self.closed = True


class Rig:
    def __init__(self, **limits: Any) -> None:
        self.clock = Clock()
        self.links: list[Link] = []
        self.manager = ConsoleManager(self.resolve, self.clock, ConsoleLimits(**limits))

    def resolve(self, node_id: str) -> Any:
        if node_id not in (NODE, OTHER):
            raise ActionError(404, "NODE_NOT_FOUND", f"no node {node_id}")

        def start(sink: ConsoleSink) -> Link:
            link = Link(sink)
            self.links.append(link)
            return link

        return start

    def open(self, node: str = NODE, who: str = "alice") -> tuple[ConsoleSession, Client, Link]:
        client = Client()
        session = self.manager.open(node, who, client)
        session.connected()
        return session, client, self.links[-1]


def test_a_second_session_on_a_node_is_refused_naming_the_holder_until_the_first_ends() -> None:
    rig = Rig()
    first, _, link = rig.open(who="alice at 127.0.0.1")
    rig.clock.advance(42)
    with pytest.raises(ActionError) as refused:
        rig.open(who="bob")
    assert refused.value.code == "CONSOLE_BUSY" and refused.value.status == 409
    assert "in use by alice at 127.0.0.1 (for 42 s)" in str(refused.value)
    rig.open(OTHER, who="bob")  # another node is free
    first.client_gone()
    assert link.closed and rig.manager.count() == 1
    rig.open(who="bob")
    assert rig.manager.count() == 2
    two = Rig(per_node=2)
    two.open(who="alice")
    two.open(who="bob")
    with pytest.raises(ActionError, match="at most 2 per node"):
        two.open(who="carol")


def test_the_server_wide_limit_and_unknown_nodes_are_refused() -> None:
    rig = Rig(sessions=1)
    rig.open()
    with pytest.raises(ActionError) as refused:
        rig.open(OTHER)
    assert refused.value.code == "CONSOLE_LIMIT" and refused.value.status == 503
    with pytest.raises(ActionError) as unknown:
        rig.open("cccccccc-0000-0000-0000-0000000000ff")
    assert unknown.value.status == 404


def test_idle_sessions_close_and_traffic_either_way_keeps_them_open() -> None:
    rig = Rig(idle=60)
    session, client, link = rig.open()
    rig.clock.advance(50)
    session.output(b"boot messages\r\n")
    rig.clock.advance(50)
    session.received(b"x")
    rig.clock.advance(59)
    assert client.closed is None
    rig.clock.advance(1)
    assert client.error() == "CONSOLE_IDLE" and client.closed is not None and client.closed[0] == 4408
    assert link.closed and rig.manager.count() == 0
    assert not rig.clock.getDelayedCalls()


def test_a_bmc_that_never_activates_the_console_times_out() -> None:
    rig = Rig(connect=5)
    client = Client()
    rig.manager.open(NODE, "alice", client)
    rig.clock.advance(5)
    assert client.error() == "BMC_TIMEOUT" and client.closed is not None and client.closed[0] == 4504
    assert rig.links[0].closed and rig.manager.count() == 0


def test_a_slow_reader_gets_the_newest_output_and_a_count_of_what_was_dropped() -> None:
    rig = Rig(output_buffer=100)
    session, client, _ = rig.open()
    client.can_write = False
    for i in range(30):
        session.output(b"%09d\n" % i)  # 10 bytes each: 300 in all
    assert len(session.held) == 100 and session.dropped == 200
    assert client.data == []
    client.can_write = True
    session.flush()
    assert client.notes[-1] == {"event": "dropped", "bytes": 200}
    assert client.data == [b"".join(b"%09d\n" % i for i in range(20, 30))]
    session.output(b"live")
    assert client.data[-1] == b"live" and not session.held


def test_input_goes_to_the_bmc_one_send_at_a_time_and_too_much_closes() -> None:
    rig = Rig(input_buffer=10)
    client = Client()
    session = rig.manager.open(NODE, "alice", client)
    link = rig.links[0]
    session.received(b"ab")  # before the console is active: held
    assert link.sends == []
    session.connected()
    assert [d for d, _ in link.sends] == [b"ab"]
    session.received(b"cd")
    session.received(b"ef")
    assert len(link.sends) == 1  # the first is not acknowledged yet
    link.sends[0][1].callback(None)
    assert [d for d, _ in link.sends] == [b"ab", b"cdef"]
    session.received(b"0123456789x")
    assert client.error() == "INPUT_OVERFLOW" and link.closed


def test_a_bmc_error_is_told_then_the_socket_closes_and_the_slot_frees() -> None:
    rig = Rig()
    session, client, link = rig.open()
    session.ended(ActionError(502, "BMC_ERROR", "BMC 127.0.0.1:623: Incorrect password provided"))
    assert client.notes[-1]["error"]["message"].endswith("Incorrect password provided")
    assert client.closed is not None and client.closed[0] == 4502 and link.closed
    assert rig.manager.count() == 0
    session.output(b"late")  # a late packet after the end is dropped quietly
    assert client.data == []


def test_escape_dot_at_line_start_quits() -> None:
    f = EscapeFilter()
    assert f.feed(b"~.") == (b"", True)
    f = EscapeFilter()
    assert f.feed(b"ls ~.\r") == (b"ls ~.\r", False)
    assert f.feed(b"~") == (b"", False)  # held: could be an escape
    assert f.feed(b"~") == (b"~", False)  # ~~ sends one ~
    assert f.feed(b"\n~x") == (b"\n~x", False)
    assert f.feed(b"\r~.rest") == (b"\r", True)


@given(st.lists(st.binary(max_size=20).filter(lambda b: b"~" not in b), max_size=10))
def test_input_without_the_escape_character_passes_unchanged(chunks: list[bytes]) -> None:
    f = EscapeFilter()
    out = b"".join(f.feed(c)[0] for c in chunks)
    assert out == b"".join(chunks)


def test_the_websocket_port_hands_console_paths_to_a_console_stream_with_back_pressure() -> None:
    from types import SimpleNamespace

    from twisted.internet.testing import StringTransport

    from kraken.state.events import EventBus
    from kraken.state.websocket import EventSocket, EventSocketFactory

    rig = Rig(output_buffer=8)
    sock: EventSocket = EventSocketFactory(EventBus(), rig.manager).buildProtocol(None)
    sock.transport = StringTransport()
    sock.state = EventSocket.STATE_OPEN
    sent: list[tuple[bytes, bool]] = []
    closes: list[tuple[int, str]] = []
    sock.sendMessage = lambda payload, isBinary=False, **k: sent.append((payload, isBinary))  # type: ignore[method-assign]
    sock.sendClose = lambda code=None, reason=None: closes.append((code, reason))  # type: ignore[method-assign]
    sock.onConnect(SimpleNamespace(path=f"/node/{NODE}/console"))  # type: ignore[arg-type]
    sock.onOpen()
    assert sock.console is not None and sock.maxMessagePayloadSize == 64 * 1024
    link = rig.links[0]
    link.sink.connected()
    sock.onMessage(b"ls\r", True)
    assert [d for d, _ in link.sends] == [b"ls\r"]
    link.sink.output(b"hello")
    assert sent[-1] == (b"hello", True)
    assert sock.console is not None
    sock.console.flow.pauseProducing()  # the client's socket is full
    link.sink.output(b"0123456789abcdef")
    assert sent[-1] == (b"hello", True)
    sock.console.flow.resumeProducing()
    assert sent[-2:] == [(b'{"event": "dropped", "bytes": 8}', False), (b"89abcdef", True)]
    sock.onClose(True, 1000, None)
    assert link.closed and rig.manager.count() == 0 and not closes

    other: EventSocket = EventSocketFactory(EventBus(), rig.manager).buildProtocol(None)
    other.onConnect(SimpleNamespace(path="/ws"))  # type: ignore[arg-type]
    assert other.console is None  # the event stream, as before
