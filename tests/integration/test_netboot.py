"""Network boot end to end: network namespaces as nodes on a bridge, real DHCP and TFTP clients.

kraken-state runs the ``pxe`` module on the bridge; a P2P cluster (origin, tracker, one agent on
the bridge) serves the boot image. Each node namespace plays the machine: busybox ``udhcpc``
takes the lease, tftp-hpa (and busybox tftp with ``blksize``) fetches the loader and the iPXE
script, ``curl`` fetches kernel and initrd through the agent, chains ``fetched`` and reports
``booted``; the node's Dsc walks the boot states. Needs root (namespaces, ports 67 and 69).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from kraken.core.digest import Digest
from tests.integration.p2p_fixtures import agent_config
from tests.integration.state_rig import PARENT_ID, client, state_config, wait_for
from tests.integration.test_p2p_swarm import start_cluster
from tests.support import REPO, _env

NEEDED = ["ip", "busybox", "tftp", "curl"]
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(tool) is None for tool in NEEDED),
    reason=f"needs root and {', '.join(NEEDED)} (scripts/setup.sh installs them)",
)

NODE = "0b000000-0000-0000-0000-000000000001"
IMAGELESS = "0b000000-0000-0000-0000-000000000002"
DHCP_SCRIPT = """#!/bin/sh
[ "$1" = bound ] || exit 0
ip addr add "$ip/$mask" dev "$interface"
env > "{out}"
"""


@dataclass
class BootNet:
    bridge: str
    prefix: str  # "10.213.N"
    namespaces: dict[str, str]  # node name -> namespace

    @property
    def server_ip(self) -> str:
        return f"{self.prefix}.1"

    def run(
        self, node: str, *args: str, timeout: float = 30, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.namespaces[node], *args],
            capture_output=True, text=True, timeout=timeout, check=check,
        )  # fmt: skip


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def bootnet() -> Iterator[BootNet]:
    tag = f"{os.getpid() % 100000}"
    net = BootNet(f"knb{tag}", f"10.213.{os.getpid() % 250 + 1}", {})
    macs = {"n1": "02:6b:00:00:00:01", "n2": "02:6b:00:00:00:02", "stranger": "02:6b:00:00:00:99"}
    try:
        sh("ip", "link", "add", net.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{net.server_ip}/24", "dev", net.bridge)
        sh("ip", "link", "set", net.bridge, "up")
        for i, (name, mac) in enumerate(macs.items()):
            ns, host_end = f"knb{tag}-{name}", f"knb{tag}h{i}"
            sh("ip", "netns", "add", ns)
            net.namespaces[name] = ns
            sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", host_end, "master", net.bridge, "up")
            net.run(name, "ip", "link", "set", "eth0", "address", mac)
            net.run(name, "ip", "link", "set", "eth0", "up")
            net.run(name, "ip", "link", "set", "lo", "up")
        yield net
    finally:
        for ns in net.namespaces.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", net.bridge], capture_output=True)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kraken.cli.main", *args],
        capture_output=True, text=True, cwd=REPO, env=_env(), timeout=60,
    )


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pxe_client(mac: str, ip: str, **boot: Any) -> dict[str, Any]:
    ext = {"@type": "type.googleapis.com/PXE.Client", "mac": mac, "ip": ip, "prefix": 24, "state": "BOOTED"}
    return {**ext, **boot}


PXE_VENDOR = "PXEClient:Arch:00000:UNDI:002001"


def dhcp(net: BootNet, node: str, tmp: Path, tries: int = 5, vendor: str = PXE_VENDOR) -> dict[str, str]:
    out = tmp / f"lease-{node}.env"
    script = tmp / f"udhcpc-{node}.sh"
    script.write_text(DHCP_SCRIPT.format(out=out))
    script.chmod(0o755)
    done = net.run(node, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", str(tries), "-T", "1",
                   "-s", str(script), "-V", vendor, check=False)  # fmt: skip
    if not out.exists():
        assert "no lease" in done.stdout + done.stderr
        return {}
    return dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)


@pytest_twisted.inlineCallbacks
def test_a_node_boots_through_dhcp_tftp_and_the_swarm(
    bootnet: BootNet, servers: Any, pki: Path, tmp_path: Path
) -> Any:
    kernel, initrd = os.urandom(3 * 1024 * 1024 + 17), os.urandom(1024 * 1024 + 3)
    origin, tracker = start_cluster(servers, pki, tmp_path)
    agent = servers.start(
        "kraken-agent",
        {**agent_config(pki, tmp_path / "agent", tracker.port("http")),
         "listen": [f"tcp:0:interface={bootnet.server_ip}"]},
        name="agent",
    )  # fmt: skip
    kd, idd = Digest.of_bytes(kernel), Digest.of_bytes(initrd)

    boot_root = tmp_path / "bootroot"
    boot_root.mkdir()
    loader = os.urandom(70_000)
    (boot_root / "undionly.kpxe").write_bytes(loader)
    (tmp_path / "outside").write_bytes(b"secret")
    http_port = free_port(bootnet.server_ip)
    agent_url = f"http://{bootnet.server_ip}:{agent.port('http')}"
    config = state_config(
        pki, tmp_path, modules=["sim", "freebusy", "pxe"],
        module_config={
            "sim": {"latency": 0.05, "timeout": 5},
            "pxe": {"server_ip": bootnet.server_ip, "interface": bootnet.bridge, "http_port": http_port,
                    "agent_url": agent_url, "boot_root": str(boot_root), "fetch_timeout": 4},
        },
    )  # fmt: skip
    state = servers.start("kraken-state", config, name="state")
    api = client(pki, state)
    api.post("/cfg/node", {
        "id": NODE, "nodename": "n1", "platform": "sim", "parentId": PARENT_ID, "physState": "POWER_ON",
        "extensions": [pxe_client("02:6b:00:00:00:01", f"{bootnet.prefix}.21")],
    })  # fmt: skip
    api.post("/cfg/node", {
        "id": IMAGELESS, "nodename": "n2", "platform": "sim", "parentId": PARENT_ID, "physState": "POWER_ON",
        "extensions": [pxe_client("02:6b:00:00:00:02", f"{bootnet.prefix}.22")],
    })  # fmt: skip

    def pxe_state(node_id: str) -> str:
        for ext in api.get(f"/dsc/node/{node_id}").get("extensions", []):
            if ext.get("@type", "").endswith("PXE.Client"):
                return str(ext.get("state", "NONE"))
        return "NONE"

    wait_for(lambda: pxe_state(NODE) == "WAIT", what="the node armed for boot")

    api.put("/group/rack1", {"nodes": [NODE]})  # the image is assigned to the group, n1 inherits it
    (tmp_path / "vmlinuz").write_bytes(kernel)
    (tmp_path / "initrd.img").write_bytes(initrd)
    state_cli = ["state", "--url", f"https://127.0.0.1:{state.port('http')}", "--pki", str(pki), "image"]
    pushed = yield deferToThread(
        cli, *state_cli, "push", "tiny", "--kernel", str(tmp_path / "vmlinuz"), "--initrd",
        str(tmp_path / "initrd.img"), "--cmdline", "console=ttyS0 quiet", "--group", "rack1",
        "--origin", f"127.0.0.1:{origin.port('http')}",
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    assert f"kernel {kd}" in pushed.stdout and "assigned tiny to group rack1" in pushed.stdout
    listed = yield deferToThread(cli, *state_cli, "list")
    assert "tiny  kernel sha256:" in listed.stdout and "1 node(s): n1" in listed.stdout

    lease = dhcp(bootnet, "n1", tmp_path)
    assert lease.get("ip") == f"{bootnet.prefix}.21" and lease.get("mask") == "24"
    assert lease.get("siaddr") == bootnet.server_ip and lease.get("boot_file") == "undionly.kpxe"
    assert lease.get("hostname") == "n1"
    wait_for(lambda: pxe_state(NODE) == "INIT", what="the DHCP request to show in Dsc")

    got = tmp_path / "got-loader"
    bootnet.run("n1", "tftp", "-m", "binary", bootnet.server_ip, "-c", "get", "undionly.kpxe", str(got))
    assert got.read_bytes() == loader
    got.unlink()
    bootnet.run("n1", "busybox", "tftp", "-g", "-b", "1432", "-r", "undionly.kpxe", "-l", str(got),
                bootnet.server_ip)  # fmt: skip
    assert got.read_bytes() == loader
    script_file = tmp_path / "script.ipxe"
    bootnet.run("n1", "tftp", "-m", "binary", bootnet.server_ip, "-c", "get", "kraken.ipxe", str(script_file))
    script = script_file.read_text().splitlines()
    blobs = f"{agent_url}/namespace/boot/blobs"
    assert script[0] == "#!ipxe"
    assert script[2].startswith(f"kernel {blobs}/{kd} console=ttyS0 quiet kraken.node={NODE}")
    assert script[3] == f"initrd {blobs}/{idd}"
    fetched_url = script[4].removeprefix("chain ")
    assert fetched_url == f"http://{bootnet.server_ip}:{http_port}/boot/{NODE}/fetched"

    escaped = bootnet.run("n1", "tftp", "-m", "binary", bootnet.server_ip, "-c", "get", "../outside",
                          str(tmp_path / "stolen"), check=False)  # fmt: skip
    assert "leaves the boot root" in escaped.stdout + escaped.stderr
    assert not (tmp_path / "stolen").exists() or (tmp_path / "stolen").read_bytes() != b"secret"

    for url, expected in ((script[2].split()[1], kernel), (script[3].split()[1], initrd)):
        dest = tmp_path / f"fetched-{Digest.of_bytes(expected).hex[:8]}"
        bootnet.run("n1", "curl", "-sf", url, "-o", str(dest), timeout=60)
        assert dest.read_bytes() == expected, "the image must arrive byte-identical through the agent"
    chained = bootnet.run("n1", "curl", "-sf", fetched_url).stdout
    assert chained == "#!ipxe\nboot\n"
    wait_for(lambda: pxe_state(NODE) == "FETCHED", what="the image fetch to show in Dsc")
    bootnet.run("n1", "curl", "-sf", "-X", "POST", fetched_url.replace("/fetched", "/booted"))
    wait_for(lambda: pxe_state(NODE) == "BOOTED", what="the node to report in")
    # The booted OS's own DHCP client renews the lease: that is no boot evidence.
    assert dhcp(bootnet, "n1", tmp_path, vendor="udhcp 1.35.0").get("ip") == f"{bootnet.prefix}.21"
    assert pxe_state(NODE) == "BOOTED"

    # A report from another address is refused; an unknown MAC gets no lease at all.
    refused = bootnet.run("n2", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                          fetched_url.replace("/fetched", "/booted"), check=False)  # fmt: skip
    assert refused.stdout in ("000", "403")  # n2 has no address yet: it cannot even connect
    assert dhcp(bootnet, "stranger", tmp_path, tries=2) == {}
    assert "dhcp ignores 02:6b:00:00:00:99" in state.log()

    # A node without an image gets a script that says why, and falls to PHYS_HANG.
    lease2 = dhcp(bootnet, "n2", tmp_path)
    assert lease2.get("ip") == f"{bootnet.prefix}.22"
    script2 = tmp_path / "script2.ipxe"
    bootnet.run("n2", "tftp", "-m", "binary", bootnet.server_ip, "-c", "get", "kraken.ipxe", str(script2))
    assert "cannot boot" in script2.read_text() and "Kernel is unset" in script2.read_text()
    wait_for(lambda: "pxe/INITtoFETCHED failed on " + IMAGELESS in state.log(), timeout=15,
             what="the imageless node's boot to time out")  # fmt: skip
    assert "declaring /PhysState = PHYS_HANG" in state.log()
    assert "pxe cannot boot " + IMAGELESS in state.log()
