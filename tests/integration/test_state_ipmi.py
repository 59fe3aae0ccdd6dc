"""The IPMI power module against a real BMC: Debian's ipmi_sim on 127.0.0.1, driven over REST."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kraken.state.modules.ipmi import BMC
from tests.integration.state_rig import PARENT_ID, client, state_config, wait_for
from tests.support import ServerProcess, free_port

pytestmark = pytest.mark.skipif(
    shutil.which("ipmi_sim") is None, reason="needs ipmi_sim (apt package openipmi)"
)

NODE = "eeeeeeee-0000-0000-0000-000000000001"

CHASSIS = """#!/bin/sh
# ipmi_sim chassis_control hook: $1 = device, then get|set power [value]
state="$(dirname "$0")/power.$1"
[ "$2" = set ] && echo "$3 $4" >> "$(dirname "$0")/calls.$1"
[ -f "$state" ] || echo 0 > "$state"
case "$2 $3" in
  "get power") echo "power:$(cat "$state")" ;;
  "set power") echo "$4" > "$state" ;;
  "check "*) exit 1 ;;
esac
exit 0
"""

LAN_CONF = """name "krbmc1"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{dir}/chassis.sh krbmc1"
{sol}  user 1 true  ""      "test"   user  10 none md2 md5 straight
  user 2 true  "admin" "secret" admin 10 none md2 md5 straight
"""

EMU = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
"""



class Bmc:
    """ipmi_sim as one BMC; with *sol_port* its SOL console is the TCP server on that port."""

    def __init__(self, directory: Path, sol_port: int | None = None) -> None:
        self.dir = directory
        self.port = free_port(socket.SOCK_DGRAM)
        self.sol = f'  sol "tcp:127.0.0.1:{sol_port}" 115200\n' if sol_port else ""
        self.power_file = directory / "power.krbmc1"

    def start(self) -> None:
        (self.dir / "state").mkdir(parents=True, exist_ok=True)
        hook = self.dir / "chassis.sh"
        hook.write_text(CHASSIS)
        hook.chmod(0o755)
        (self.dir / "lan.conf").write_text(LAN_CONF.format(port=self.port, dir=self.dir, sol=self.sol))
        (self.dir / "krbmc1.emu").write_text(EMU)
        self.power_file.write_text("0\n")
        self.proc = subprocess.Popen(
            [
                "ipmi_sim",
                "-c",
                str(self.dir / "lan.conf"),
                "-f",
                str(self.dir / "krbmc1.emu"),
                "-s",
                str(self.dir / "state"),
                "-n",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.status() is not None:
                return
            time.sleep(0.2)
        raise RuntimeError("ipmi_sim did not answer")

    def status(self) -> str | None:
        """Power as ipmitool (an independent client) sees it."""
        out = subprocess.run(
            [
                "ipmitool",
                "-I",
                "lanplus",
                "-H",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "admin",
                "-P",
                "secret",
                "-R",
                "1",
                "-N",
                "1",
                "chassis",
                "power",
                "status",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if "is on" in out.stdout:
            return "on"
        if "is off" in out.stdout:
            return "off"
        return None

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def bmc(tmp_path: Path) -> Iterator[Bmc]:
    b = Bmc(tmp_path / "bmc")
    b.start()
    try:
        yield b
    finally:
        b.stop()


def ipmi_node(port: int, password: str, node_id: str = NODE, **extra: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "nodename": "bmc-node",
        "platform": "ipmi",
        "parentId": PARENT_ID,
        "extensions": [
            {"@type": BMC.url, "host": "127.0.0.1", "port": port, "user": "admin", "password": password}
        ],
        **extra,
    }


def test_power_on_through_rest_powers_the_bmc(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool, bmc: Bmc
) -> None:
    config = state_config(
        pki, tmp_path, modules=["ipmi"], module_config={"ipmi": {"poll": 0.5, "timeout": 10}}
    )
    api = client(pki, servers.start("kraken-state", config, name="engine"))
    api.post("/cfg/node", ipmi_node(bmc.port, "secret"))
    wait_for(lambda: api.get(f"/dsc/node/{NODE}")["physState"] == "POWER_OFF", what="UKtoOFF to read the BMC")
    assert bmc.status() == "off"
    node = api.get(f"/cfg/node/{NODE}")
    node["physState"] = "POWER_ON"
    api.put(f"/cfg/node/{NODE}", node)
    wait_for(lambda: api.get(f"/dsc/node/{NODE}")["physState"] == "POWER_ON", what="Dsc to follow the BMC")
    assert bmc.power_file.read_text().strip() == "1"
    assert bmc.status() == "on"
    # Someone switches it off behind kraken's back: the poll notices, the engine powers it on again.
    bmc.power_file.write_text("0\n")
    wait_for(lambda: bmc.power_file.read_text().strip() == "1", what="the engine to restore power")
    # One-shot actions: the chassis identify light and a power reset reach the BMC.
    calls = bmc.dir / "calls.krbmc1"
    assert api.post(f"/action/node/{NODE}/identify", {"on": True})["result"] == {"identify": True}
    wait_for(lambda: "identify" in calls.read_text(), what="the identify light")
    assert api.post(f"/action/node/{NODE}/restart", {})["result"] == {"reset": "reset"}
    wait_for(lambda: "reset" in calls.read_text(), what="the power reset")


def _log(servers: ServerProcess.Pool) -> str:
    return servers.started[0].log()


def test_wrong_password_hangs_the_node_and_the_engine_keeps_running(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool, bmc: Bmc
) -> None:
    config = state_config(
        pki,
        tmp_path,
        modules=["ipmi", "sim"],
        module_config={"ipmi": {"poll": 0, "timeout": 10}, "sim": {"latency": 0.05}},
    )
    api = client(pki, servers.start("kraken-state", config, name="engine"))
    api.post("/cfg/node", ipmi_node(bmc.port, "wrong", physState="POWER_ON"))
    wait_for(lambda: api.get(f"/dsc/node/{NODE}")["physState"] == "PHYS_HANG", what="PHYS_HANG")
    assert bmc.power_file.read_text().strip() == "0"
    other = "eeeeeeee-0000-0000-0000-000000000002"
    api.post("/cfg/node", {"id": other, "platform": "sim", "parentId": PARENT_ID, "physState": "POWER_ON"})
    wait_for(
        lambda: api.get(f"/dsc/node/{other}")["physState"] == "POWER_ON", what="the engine to keep working"
    )
    assert api.get("/health")["status"] == "ok"
    assert "Incorrect password" in _log(servers) or "password" in _log(servers).lower()
