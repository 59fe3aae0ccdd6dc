"""The Redfish module against a real BMC emulator (sushy-tools, fake driver) on 127.0.0.1: power on,
restart and off through kraken-state's REST API, inventory in Dsc, identify LED, and a wrong
password that hangs the node with a clear error while the engine keeps working."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kraken.state.client import ClientError, StateClient
from kraken.state.modules.redfish import BMC, INVENTORY
from tests.integration.redfish_bmc import PASSWORD, USER, RedfishBmc, fake_system, have_emulator
from tests.integration.state_rig import PARENT_ID, ConsoleCli, client, state_config, wait_for
from tests.support import ServerProcess

pytestmark = pytest.mark.skipif(not have_emulator(), reason="needs sushy-tools (pip, test extra)")

NODE = "ffffffff-0000-0000-0000-000000000001"
SYSTEM = "27946b59-9e44-4fa7-8e91-f3527a1e0001"
MAC = "52:54:00:aa:00:01"
MODULES = {"redfish": {"poll": 0.5, "settle": 0.3, "timeout": 30}}


@pytest.fixture
def bmc(tmp_path: Path) -> Iterator[RedfishBmc]:
    b = RedfishBmc(tmp_path / "bmc", [fake_system(SYSTEM, "rf1", MAC)]).start()
    try:
        yield b
    finally:
        b.stop()


def redfish_node(url: str, password: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": NODE,
        "nodename": "rf1",
        "platform": "redfish",
        "parentId": PARENT_ID,
        "extensions": [{"@type": BMC.url, "url": url, "user": USER, "password": password}],
        **extra,
    }


def dsc(api: StateClient) -> dict[str, Any]:
    return dict(api.get(f"/dsc/node/{NODE}"))


def inventory(api: StateClient) -> dict[str, Any]:
    found = [e for e in dsc(api).get("extensions", []) if e["@type"] == INVENTORY.url]
    return dict(found[0]) if found else {}


def set_power(api: StateClient, state: str) -> None:
    node = api.get(f"/cfg/node/{NODE}")
    node["physState"] = state
    api.put(f"/cfg/node/{NODE}", node)


def test_power_inventory_restart_and_identify(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool, bmc: RedfishBmc
) -> None:
    config = state_config(pki, tmp_path, modules=["redfish"], module_config=MODULES)
    api = client(pki, servers.start("kraken-state", config, name="engine"))
    api.post("/cfg/node", redfish_node(bmc.url, PASSWORD))
    wait_for(lambda: dsc(api)["physState"] == "POWER_OFF", what="UKtoOFF to read the BMC")
    inv = wait_for(lambda: inventory(api).get("nics") and inventory(api), what="the inventory")
    assert inv["nics"] == [{"id": MAC, "mac": MAC}]
    assert inv["manufacturer"] == "Sushy Emulator" and inv["uuid"] == SYSTEM and inv["error"] == ""

    set_power(api, "POWER_ON")
    wait_for(lambda: bmc.power(SYSTEM) == "On", timeout=30, what="the BMC to switch on")
    wait_for(lambda: dsc(api)["physState"] == "POWER_ON", what="Dsc to follow the BMC")

    answer = api.post(f"/action/node/{NODE}/restart", {})
    assert answer == {"node": NODE, "action": "restart", "result": {"reset": "ForceRestart"}}
    assert bmc.power(SYSTEM) == "Off"  # the emulator drops power at once and comes back later
    wait_for(lambda: bmc.power(SYSTEM) == "On", timeout=30, what="the restart to complete")
    wait_for(lambda: dsc(api)["physState"] == "POWER_ON", what="Dsc to be on again")

    assert api.post(f"/action/node/{NODE}/identify", {"led": "Blinking"})["result"] == {"led": "Blinking"}
    assert bmc.get(f"/redfish/v1/Systems/{SYSTEM}")["IndicatorLED"] == "Blinking"
    with pytest.raises(ClientError) as e:
        api.post(f"/action/node/{NODE}/identify", {"led": "Purple"})
    assert e.value.status == 400
    with pytest.raises(ClientError) as e:
        api.post(f"/action/node/{NODE}/warp", {})
    assert e.value.code == "NO_ACTION" and "restart" in str(e.value)

    set_power(api, "POWER_OFF")
    wait_for(lambda: bmc.power(SYSTEM) == "Off", timeout=30, what="the BMC to switch off")
    wait_for(lambda: dsc(api)["physState"] == "POWER_OFF", what="Dsc to follow")


def test_wrong_password_hangs_the_node_with_a_clear_error(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool, bmc: RedfishBmc
) -> None:
    config = state_config(
        pki, tmp_path, modules=["redfish", "sim"], module_config={**MODULES, "sim": {"latency": 0.05}}
    )
    api = client(pki, servers.start("kraken-state", config, name="engine"))
    api.post("/cfg/node", redfish_node(bmc.url, "wrong", physState="POWER_ON"))
    wait_for(lambda: dsc(api)["physState"] == "PHYS_HANG", what="PHYS_HANG")
    error = inventory(api)["error"]
    assert "401" in error and "Incorrect username or password" in error and bmc.url in error
    assert bmc.power(SYSTEM) == "Off"
    other = "ffffffff-0000-0000-0000-000000000002"
    api.post("/cfg/node", {"id": other, "platform": "sim", "parentId": PARENT_ID, "physState": "POWER_ON"})
    wait_for(lambda: api.get(f"/dsc/node/{other}")["physState"] == "POWER_ON", what="the engine to go on")
    assert api.get("/health")["status"] == "ok"


def test_console_of_a_bmc_without_serial_console_is_a_clear_error(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool, bmc: RedfishBmc
) -> None:
    system = bmc.get(f"/redfish/v1/Systems/{SYSTEM}")
    assert "SerialConsole" not in system  # what sushy-tools offers, read without sushy
    config = state_config(pki, tmp_path, modules=["redfish"], module_config={"redfish": {"poll": 0}})
    proc = servers.start("kraken-state", config, name="engine")
    api = client(pki, proc)
    api.post("/cfg/node", redfish_node(bmc.url, PASSWORD))
    assert api.get(f"/node/{NODE}/console")["url"] == f"/node/{NODE}/console"
    cli = ConsoleCli(pki, proc.port("http"), NODE)
    assert cli.end() == 1
    assert b"NO_SERIAL_CONSOLE: this BMC offers no serial console" in cli.err, cli.err
