"""Node JSON shape, URL addressing, diffs, and the Cfg/Dsc stores with their events."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kraken.state import model
from kraken.state.events import ChangeKind, Event, EventBus, EventType, url_filter
from kraken.state.model import ExtensionType, ModelError, PhysState, RunState, register_extension
from kraken.state.store import StateStore, StoreError

NID = "123e4567-e89b-12d3-a456-426655440000"
OTHER = "223e4567-e89b-12d3-a456-426655440000"
TEST_EXT = register_extension(ExtensionType("Test.Thing", {"/State": RunState}))


def node_json(**extra: Any) -> dict[str, Any]:
    return {"id": NID, "nodename": "kr1", "physState": "POWER_ON", "runState": "SYNC", **extra}


def test_json_round_trip_keeps_the_original_shape() -> None:
    data = node_json(
        parentId=OTHER,
        platform="ipmi",
        services=[{"id": "sim", "module": "m", "state": "RUN", "config": {"port": 1}}],
        extensions=[{"@type": TEST_EXT.url, "state": "INIT", "ifaces": {"kraken": {"ip": "10.0.0.1"}}}],
    )
    node = model.from_json(data)
    out = model.to_json(node)
    assert out["physState"] == "POWER_ON" and out["runState"] == "SYNC" and out["busy"] == "FREE"
    assert out["parentId"] == OTHER
    assert out["services"] == [{"id": "sim", "module": "m", "state": "RUN", "config": {"port": 1}}]
    assert out["extensions"][0]["@type"] == TEST_EXT.url
    assert model.from_json(out) == node


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"nodename": "x"}, "missing 'id'"),
        ({"id": "nope"}, "not a UUID"),
        ({"id": NID, "physState": "WARM"}, "not one of"),
        ({"id": NID, "colour": "red"}, "unknown field 'colour'"),
        ({"id": NID, "extensions": [{"@type": "type.googleapis.com/No.Such"}]}, "unregistered extension"),
        ({"id": NID, "services": [{"module": "x"}]}, "string 'id'"),
        ({"id": NID, "arch": 5}, "expected a string"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_nodes_are_clear_errors(data: Any, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        model.from_json(data)


def test_url_addressing_of_fields_services_and_extensions() -> None:
    node = model.from_json(
        node_json(extensions=[{"@type": TEST_EXT.url, "ifaces": {"kraken": {"ip": "1.2.3.4"}}}])
    )
    assert model.get_value(node, "/PhysState") is PhysState.POWER_ON
    assert model.get_value(node, TEST_EXT.url + "/Ifaces/kraken/Ip") == "1.2.3.4"
    model.set_value(node, TEST_EXT.url + "/State", "SYNC")
    assert model.get_value(node, TEST_EXT.url + "/State") is RunState.SYNC
    model.set_value(node, "/Services/sim/State", "RUN")
    model.set_value(node, "/Services/sim/Config/Port", 80)
    assert model.to_json(node)["services"][0]["config"] == {"port": 80}
    assert model.split_url(f"{NID}:/PhysState") == (NID, "/PhysState")
    assert model.split_url(TEST_EXT.url + "/State") == ("", TEST_EXT.url + "/State")
    with pytest.raises(ModelError):
        model.get_value(node, "/NoSuchField")
    with pytest.raises(ModelError):
        model.set_value(node, "/PhysState", "HOT")


def test_diff_names_every_changed_url() -> None:
    a = model.from_json(node_json(extensions=[{"@type": TEST_EXT.url, "ifaces": {"kraken": {"ip": "1"}}}]))
    b = a.copy()
    b.phys_state = PhysState.POWER_OFF
    model.set_value(b, TEST_EXT.url + "/Ifaces/kraken/Ip", "2")
    model.set_value(b, "/Services/sim/State", "RUN")
    changes = dict(model.diff(a, b))
    assert changes["/PhysState"] is PhysState.POWER_OFF
    assert changes[TEST_EXT.url + "/Ifaces/Kraken/Ip"] == "2"
    assert "/Services/sim" in changes
    assert model.diff(a, a.copy()) == []


class Recorder:
    def __init__(self, bus: EventBus, types: list[EventType], prefix: str = "") -> None:
        self.events: list[Event] = []
        bus.subscribe(f"rec{id(self)}", types, self.events.append, url_filter(prefix) if prefix else None)

    def printable(self) -> list[str]:
        return [e.describe() for e in self.events]


def test_store_emits_per_url_events_and_nothing_for_no_change() -> None:
    bus = EventBus()
    rec = Recorder(bus, [EventType.STATE_CHANGE])
    store = StateStore(bus)
    store.create(model.from_json(node_json()))
    assert rec.events[0].data.kind is ChangeKind.CREATE and rec.events[0].url == f"{NID}:"
    assert store.read_dsc(NID).phys_state is PhysState.PHYS_UNKNOWN
    rec.events.clear()
    changed = store.read(NID)
    changed.phys_state = PhysState.POWER_OFF
    changed.arch = "amd64"
    store.update(changed)
    assert rec.printable() == [
        f"(CFG_UPDATE) {NID}:/PhysState = POWER_OFF",
        f"(CFG_UPDATE) {NID}:/Arch = amd64",
    ]
    rec.events.clear()
    store.update(changed)
    assert store.set_value(NID, "/PhysState", "POWER_OFF") is False
    assert rec.events == []
    assert store.set_value(NID, "/PhysState", "POWER_ON", dsc=True)
    assert rec.printable() == [f"(UPDATE) {NID}:/PhysState = POWER_ON"]
    rec.events.clear()
    store.delete(NID)
    assert rec.events[0].data.kind is ChangeKind.DELETE and NID not in store.dsc
    with pytest.raises(StoreError) as err:
        store.read(NID)
    assert err.value.status == 404


def test_duplicate_create_is_409() -> None:
    store = StateStore(EventBus())
    store.create(model.from_json(node_json()))
    with pytest.raises(StoreError) as err:
        store.create(model.from_json(node_json()))
    assert err.value.status == 409


def test_bus_filters_replaces_and_does_not_reenter() -> None:
    bus = EventBus()
    seen: list[str] = []
    store = StateStore(bus)
    store.create(model.from_json(node_json()))
    store.create(model.from_json({**node_json(), "id": OTHER}))

    def react(event: Event) -> None:
        seen.append(event.url)
        if event.url.endswith("/PhysState"):
            store.set_value(NID, "/Arch", "arm64", dsc=True)
            seen.append("after-set")

    bus.subscribe("x", [EventType.ALL], lambda e: seen.append("old"))
    bus.subscribe("x", [EventType.STATE_CHANGE], react, url_filter(NID))
    store.set_value(OTHER, "/PhysState", "POWER_OFF", dsc=True)
    store.set_value(NID, "/PhysState", "POWER_OFF", dsc=True)
    assert seen == [f"{NID}:/PhysState", "after-set", f"{NID}:/Arch"]
    bus.unsubscribe("x")
    store.set_value(NID, "/PhysState", "POWER_ON", dsc=True)
    assert len(seen) == 3


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["id", "physState", "runState", "services", "extensions", "busy", "x"]),
        json_values,
        max_size=5,
    )
)
def test_untrusted_node_json_never_crashes(data: dict[str, Any]) -> None:
    try:
        node = model.from_json(data)
    except ModelError:
        return
    assert model.from_json(model.to_json(node)) == node


def test_the_cfg_text_a_store_keeps_follows_every_kind_of_write() -> None:
    store = StateStore(EventBus())
    store.create(model.from_json({"id": NID, "nodename": "a"}))
    assert json.loads(store.cfg_text(NID))["nodename"] == "a"
    store.update(model.from_json({"id": NID, "nodename": "b"}))
    assert json.loads(store.cfg_text(NID))["nodename"] == "b"
    store.set_value(NID, "/Nodename", "c")  # written in place: the kept text must not survive it
    assert json.loads(store.cfg_text(NID))["nodename"] == "c"
    store.set_values(NID, [("/PhysState", "POWER_ON")])
    assert json.loads(store.cfg_text(NID)) == model.to_json(store.cfg[NID])
    store.delete(NID)
    with pytest.raises(StoreError):
        store.cfg_text(NID)
