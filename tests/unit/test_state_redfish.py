"""The Redfish module's pieces without a BMC: its BMC settings, and the engine's report and
action gates that the module goes through (the real BMC is in tests/integration)."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from kraken.state import model
from kraken.state.engine import Engine
from kraken.state.events import EventBus
from kraken.state.model import Node
from kraken.state.modules.base import ActionError
from kraken.state.modules.redfish import BMC, INVENTORY, BMCConfigError, RedfishPower, base_url, bmc_of
from kraken.state.modules.sim import SimPower
from kraken.state.store import StateStore

ME = "00000000-0000-0000-0000-00000000000a"
N1 = "00000000-0000-0000-0000-000000000001"
N2 = "00000000-0000-0000-0000-000000000002"


def node(node_id: str = N1, platform: str = "redfish", parent: str = ME, **bmc: object) -> Node:
    n = Node(node_id)
    n.platform, n.parent_id = platform, parent
    if bmc:
        n.extensions[BMC.url] = dict(bmc)
    return n


def test_bmc_settings_and_clear_errors(tmp_path: object) -> None:
    s = bmc_of(node(url="https://10.0.0.5/", user="root", password="pw", system="1", verify=False))
    assert s == {"url": "https://10.0.0.5/redfish/v1", "system": "1", "user": "root", "password": "pw",
                 "verify": False}
    assert base_url("http://h/redfish/v1/") == "http://h/redfish/v1"
    with pytest.raises(BMCConfigError, match=r"no type\.googleapis\.com/Redfish\.BMC"):
        bmc_of(node())
    with pytest.raises(BMCConfigError, match="Url must be"):
        bmc_of(node(url="ftp://x"))
    with pytest.raises(BMCConfigError, match="passwordFile"):
        bmc_of(node(url="http://x", passwordFile="/nonexistent/pw"))
    with pytest.raises(ValueError, match="off must be"):
        RedfishPower({"off": "Yank"})


def rig() -> tuple[Engine, StateStore, RedfishPower]:
    bus = EventBus()
    store = StateStore(bus)
    rf = RedfishPower({"poll": 0})
    engine = Engine(store, bus, Clock(), [rf, SimPower()], ME)
    return engine, store, rf


def test_reports_only_of_declared_extensions() -> None:
    engine, store, _ = rig()
    store.create(node(url="http://x"))
    assert engine.report("redfish", N1, INVENTORY.url, {"model": "R640", "nics": []})
    assert model.get_value(store.dsc[N1], INVENTORY.url + "/Model") == "R640"
    assert not engine.report("redfish", N1, INVENTORY.url, {"model": "R640", "nics": []})  # unchanged
    assert not engine.report("sim", N1, INVENTORY.url, {"model": "forged"})
    assert not engine.report("redfish", N1, BMC.url, {"url": "http://evil"})
    assert not engine.report("redfish", N2, INVENTORY.url, {})


def test_actions_are_gated_by_node_platform_parent_and_module_state() -> None:
    engine, store, _ = rig()
    store.create(node(url="http://x"))
    store.create(node(N2, platform="redfish", parent="00000000-0000-0000-0000-0000000000ff", url="http://x"))
    sim_node = node("00000000-0000-0000-0000-000000000003", platform="sim")
    store.create(sim_node)

    def code(node_id: str, action: str) -> str:
        with pytest.raises(ActionError) as e:
            engine.act(node_id, action, {})
        return e.value.code

    assert code("00000000-0000-0000-0000-0000000000ee", "restart") == "NODE_NOT_FOUND"
    assert code(sim_node.id, "restart") == "NO_ACTION"
    assert code(N1, "warp") == "NO_ACTION"
    assert code(N2, "restart") == "NOT_PARENT"
    assert code(N1, "restart") == "MODULE_NOT_RUNNING"


def test_advertised_serial_consoles_are_read_from_the_system_and_its_managers() -> None:
    from types import SimpleNamespace

    from kraken.state.modules.redfish import advertised_consoles

    bare = SimpleNamespace(json={"Id": "1"}, managers=[SimpleNamespace(json={"Id": "BMC"})])
    assert advertised_consoles(bare) == []
    ssh = {
        "SerialConsole": {"SSH": {"ServiceEnabled": True, "Port": 2200}, "IPMI": {"ServiceEnabled": False}}
    }
    system = SimpleNamespace(json=ssh, managers=[])
    assert advertised_consoles(system) == ["SSH (port 2200)"]
    old_style = {"SerialConsole": {"ServiceEnabled": True, "ConnectTypesSupported": ["Telnet", "IPMI"]}}

    class NoManagers:
        json = old_style

        @property
        def managers(self) -> list[object]:
            raise AttributeError("no Links/ManagedBy")

    assert advertised_consoles(NoManagers()) == ["IPMI", "Telnet"]
