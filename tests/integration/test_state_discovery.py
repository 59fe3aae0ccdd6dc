"""Discovery over a scanned range: two Redfish BMCs (sushy-tools emulators on consecutive loopback
ports, one managing two machines) and an IPMI BMC (ipmi_sim) are found with their inventory and
held as discovered; an accepted one becomes a node that the engine drives, a rejected one stays
rejected across scans, and an empty port in the range is reported, not fatal."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kraken.state.client import ClientError
from kraken.state.modules.ipmi import BMC as IPMI_BMC
from kraken.state.modules.redfish import BMC, INVENTORY
from tests.integration.redfish_bmc import (
    PASSWORD,
    USER,
    RedfishBmc,
    consecutive_ports,
    fake_system,
    have_emulator,
)
from tests.integration.state_rig import PARENT_ID, client, state_config, wait_for
from tests.integration.test_state_ipmi import Bmc as IpmiBmc
from tests.support import ServerProcess

pytestmark = pytest.mark.skipif(not have_emulator(), reason="needs sushy-tools (pip, test extra)")

SYSTEMS = {
    "a1": ("27946b59-9e44-4fa7-8e91-f3527a1e0a01", "52:54:00:aa:0a:01"),
    "a2": ("27946b59-9e44-4fa7-8e91-f3527a1e0a02", "52:54:00:aa:0a:02"),
    "b1": ("27946b59-9e44-4fa7-8e91-f3527a1e0b01", "52:54:00:aa:0b:01"),
}


@pytest.fixture
def bmcs(tmp_path: Path) -> Iterator[tuple[int, list[RedfishBmc]]]:
    first = consecutive_ports(3)
    started = []
    try:
        started.append(RedfishBmc(tmp_path / "bmc-a", [fake_system(SYSTEMS[n][0], n, SYSTEMS[n][1])
                                                        for n in ("a1", "a2")], first).start())
        started.append(RedfishBmc(tmp_path / "bmc-b", [fake_system(*SYSTEMS["b1"][:1], "b1",
                                                                   SYSTEMS["b1"][1])], first + 1).start())
        yield first, started
    finally:
        for b in started:
            b.stop()


def test_discovery_over_a_range(pki: Path, tmp_path: Path, servers: ServerProcess.Pool, bmcs: Any) -> None:
    first, _ = bmcs
    discovery: dict[str, Any] = {
        "redfish": [f"http://127.0.0.1:{first}-{first + 2}"],  # the third port has nothing
        "user": USER, "password": PASSWORD, "parentId": PARENT_ID, "timeout": 3,
    }
    ipmi = None
    if shutil.which("ipmi_sim"):
        ipmi = IpmiBmc(tmp_path / "ipmi")
        ipmi.start()
        discovery["ipmi"] = [f"127.0.0.1:{ipmi.port}"]
    try:
        config = state_config(
            pki, tmp_path, modules=["redfish", "ipmi"], discovery=discovery,
            module_config={"redfish": {"poll": 0.5}, "ipmi": {"poll": 0}},
        )
        api = client(pki, servers.start("kraken-state", config, name="engine"))
        found = wait_for(lambda: (d := api.get("/discovered"))["lastScan"]["finished"] and d, what="the scan")
        scan = found["lastScan"]
        assert scan["targets"] == 3 + (1 if ipmi else 0) and scan["found"] == 3 + (1 if ipmi else 0)
        assert [e["target"] for e in scan["errors"]] == [f"http://127.0.0.1:{first + 2}"]
        by_id = {n["id"]: n for n in found["nodes"]}
        for name, (uuid, mac) in SYSTEMS.items():
            machine = by_id[uuid]
            assert machine["state"] == "discovered" and machine["platform"] == "redfish"
            assert machine["inventory"]["nics"] == [{"id": mac, "mac": mac}]
            assert machine["inventory"]["name"] == name and "password" not in machine["bmc"]
        assert by_id[SYSTEMS["b1"][0]]["bmc"]["url"] == f"http://127.0.0.1:{first + 1}"
        assert [n["id"] for n in api.get("/cfg/nodes")["nodes"]] == [PARENT_ID]  # nothing created yet

        # Accept one: it becomes a node with its BMC and inventory, and the engine drives it.
        a2 = SYSTEMS["a2"][0]
        node = api.post(f"/discovered/{a2}/accept", {"nodename": "rack1-a2"})
        assert node["platform"] == "redfish" and node["nodename"] == "rack1-a2"
        assert node["parentId"] == PARENT_ID
        ext = next(e for e in node["extensions"] if e["@type"] == BMC.url)
        assert ext["system"] == a2 and ext["url"] == f"http://127.0.0.1:{first}"
        inventory = next(e for e in api.get(f"/dsc/node/{a2}")["extensions"] if e["@type"] == INVENTORY.url)
        assert inventory["nics"][0]["mac"] == SYSTEMS["a2"][1]
        wait_for(lambda: api.get(f"/dsc/node/{a2}")["physState"] == "POWER_OFF", what="the node's power read")

        # Reject another; a new scan keeps both decisions.
        b1 = SYSTEMS["b1"][0]
        assert api.request("DELETE", f"/discovered/{b1}")["state"] == "rejected"
        with pytest.raises(ClientError) as e:
            api.post(f"/discovered/{b1}/accept", {})
        assert e.value.code == "REJECTED"
        assert api.post("/discovery/scan", {})["scans"] == 2
        wait_for(lambda: (d := api.get("/discovered"))["scans"] == 2 and d["lastScan"]["finished"],
                 what="the second scan")
        again = api.get("/discovered")
        assert [e["target"] for e in again["lastScan"]["errors"]] == [f"http://127.0.0.1:{first + 2}"]
        states = {n["id"]: n["state"] for n in again["nodes"]}
        assert states[a2] == "accepted" and states[b1] == "rejected"
        assert states[SYSTEMS["a1"][0]] == "discovered"

        if ipmi is not None:
            machine = next(n for n in api.get("/discovered")["nodes"] if n["platform"] == "ipmi")
            assert machine["bmc"]["port"] == ipmi.port and machine["inventory"]["powerState"] == "off"
            node = api.post(f"/discovered/{machine['id']}/accept", {})
            assert next(e for e in node["extensions"] if e["@type"] == IPMI_BMC.url)["host"] == "127.0.0.1"
    finally:
        if ipmi is not None:
            ipmi.stop()
