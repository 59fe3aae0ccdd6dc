"""Websocket commands, event messages and dropping a client that does not read."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from kraken.state.events import (
    ChangeKind,
    DiscoveryData,
    Event,
    EventBus,
    EventType,
    MutationData,
    MutationKind,
    StateChange,
)
from kraken.state.model import PhysState
from kraken.state.websocket import (
    MAX_PENDING,
    CommandError,
    EventSocket,
    EventSocketFactory,
    event_message,
    parse_command,
)

NID = "123e4567-e89b-12d3-a456-426655440000"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"command": 0, "type": "STATE_CHANGE"}', (0, EventType.STATE_CHANGE)),
        (b'{"command": "SUBSCRIBE", "type": "DISCOVERY"}', (0, EventType.DISCOVERY)),
        (b'{"command": "unsubscribe", "type": 2}', (1, EventType.STATE_MUTATION)),
        (b'{"type": "STATE_MUTATION"}', (0, EventType.STATE_MUTATION)),
        (b'{"command": "SUBSCRIBE", "type": "OPERATION"}', (0, EventType.OPERATION)),
        (b'{"type": 7}', (0, EventType.OPERATION)),
    ],
)
def test_commands(payload: bytes, expected: tuple[int, EventType]) -> None:
    assert parse_command(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [b"", b"[]", b'{"command": 7, "type": 1}', b'{"command": true, "type": 1}', b'{"type": "ALL"}', b"\xff"],
)
def test_bad_commands(payload: bytes) -> None:
    with pytest.raises(CommandError):
        parse_command(payload)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_fuzzed_commands_never_crash(payload: bytes) -> None:
    try:
        parse_command(payload)
    except CommandError:
        pass


def test_event_messages_have_the_original_shape() -> None:
    change = Event(
        EventType.STATE_CHANGE, f"{NID}:/PhysState", StateChange(ChangeKind.UPDATE, PhysState.POWER_ON)
    )
    assert event_message(change) == {
        "type": 1,
        "url": "/PhysState",
        "data": f"(UPDATE) {NID}:/PhysState = POWER_ON",
        "nodeid": NID,
        "value": "POWER_ON",
    }
    mutation = Event(EventType.STATE_MUTATION, f"{NID}:", MutationData(MutationKind.MUTATE, "sim", "OFFtoON"))
    assert event_message(mutation)["data"] == f"(MUTATE) {NID} : sim -> OFFtoON"
    assert event_message(mutation)["value"] == "OFFtoON"
    found = Event(EventType.DISCOVERY, f"{NID}:/PhysState", DiscoveryData("sim", "POWER_OFF"))
    assert event_message(found)["data"] == f"(sim) {NID}:/PhysState == POWER_OFF"


def test_a_client_that_stops_reading_is_dropped_not_buffered() -> None:
    bus = EventBus()
    sock: EventSocket = EventSocketFactory(bus).buildProtocol(None)
    sock.transport = StringTransport()
    sock.state = EventSocket.STATE_OPEN
    sent: list[bytes] = []
    dropped: list[bool] = []
    sock.sendMessage = lambda payload, *a, **k: sent.append(payload)  # type: ignore[method-assign]
    sock.dropConnection = lambda abort=False: dropped.append(abort)  # type: ignore[method-assign]
    sock.onOpen()
    sock.onMessage(b'{"command": 0, "type": "DISCOVERY"}', False)

    def emit() -> None:
        bus.emit_one(Event(EventType.DISCOVERY, f"{NID}:/PhysState", DiscoveryData("sim", "POWER_ON")))

    emit()
    assert len(sent) == 1
    sock.flow.pauseProducing()
    for _ in range(10):
        emit()
    assert len(sent) == 1 and len(sock.pending) == 10
    sock.flow.resumeProducing()
    assert len(sent) == 11 and not sock.pending
    sock.flow.pauseProducing()
    for _ in range(MAX_PENDING + 1):
        emit()
    assert dropped == [True]
    emit()
    assert len(sent) == 11  # unsubscribed
