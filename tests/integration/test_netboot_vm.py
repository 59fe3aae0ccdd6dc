"""One real machine network-boots from kraken: a QEMU VM whose iPXE ROM (Debian's ipxe-qemu)
takes its lease from the pxe module, loads Debian's kernel and a tiny initramfs through a kraken
agent, prints a marker on its serial console and reports ``booted``; the node's Dsc says BOOTED.

Slow (it installs QEMU and downloads Debian's kernel package, about 100 MB, once) and root-only
(a tap device on the boot bridge). The VM runs under TCG: KVM, where /dev/kvm exists in a
nested sandbox, hung in the iPXE ROM.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.integration.p2p_fixtures import agent_config
from tests.integration.state_rig import PARENT_ID, client, state_config, wait_for
from tests.integration.test_netboot import NEEDED, BootNet, bootnet, cli, free_port, pxe_client
from tests.integration.test_p2p_swarm import start_cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or any(shutil.which(t) is None for t in NEEDED), reason="root"),
]
__all__ = ["bootnet"]

VM_NODE = "0b000000-0000-0000-0000-0000000000aa"
VM_MAC = "02:6b:00:00:00:aa"
MARKER = "KRAKEN-NETBOOT-MARKER"
ROM = "/usr/lib/ipxe/qemu/pxe-e1000.rom"
CACHE = Path(os.environ.get("KRAKEN_TEST_CACHE", Path.home() / ".cache" / "kraken-tests"))
INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "{MARKER} $(cat /proc/cmdline)"
insmod /e1000.ko
ip link set eth0 up
udhcpc -i eth0 -n -q -t 10 -s /dhcp.sh -V linux
report=$(sed -n 's/.*kraken.report=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
wget -q -O - --post-data= "$report" && echo KRAKEN-REPORTED
poweroff -f
"""
DHCP = """#!/bin/sh
[ "$1" = bound ] && ip addr add "$ip/$mask" dev "$interface"
exit 0
"""


def vm_assets() -> tuple[Path, Path]:
    """Debian's kernel (downloaded once into the cache) and its e1000 module."""
    if shutil.which("qemu-system-x86_64") is None or not Path(ROM).exists():
        packages = ["qemu-system-x86", "ipxe-qemu"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
        subprocess.run(install, check=True, capture_output=True, env=env)
    unpacked = CACHE / "linux-image"
    kernels = sorted(unpacked.glob("boot/vmlinuz-*"))
    if not kernels:
        CACHE.mkdir(parents=True, exist_ok=True)
        depends = ["apt-cache", "depends", "linux-image-amd64"]
        lines = subprocess.run(depends, capture_output=True, text=True).stdout.splitlines()
        package = next(line.split()[-1] for line in lines if "Depends: linux-image" in line)
        subprocess.run(["apt-get", "download", package], cwd=CACHE, check=True, capture_output=True)
        deb = next(CACHE.glob(f"{package}_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        deb.unlink()
        kernels = sorted(unpacked.glob("boot/vmlinuz-*"))
    module = next(unpacked.glob("lib/modules/*/kernel/drivers/net/ethernet/intel/e1000/e1000.ko"))
    return kernels[-1], module


def newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A cpio archive in the kernel's initramfs format ("newc") of (name, mode, data) entries."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += bytes(-len(out) % 4)
        out += data
        out += bytes(-len(out) % 4)
    return bytes(out)


def initramfs(module: Path, out: Path) -> Path:
    directory, executable, regular = 0o040755, 0o100755, 0o100644
    entries = [(d, directory, b"") for d in ("bin", "proc", "sys", "dev")] + [
        ("bin/busybox", executable, Path("/bin/busybox").read_bytes()),
        ("e1000.ko", regular, module.read_bytes()),
        ("init", executable, INIT.encode()),
        ("dhcp.sh", executable, DHCP.encode()),
    ]
    out.write_bytes(gzip.compress(newc(entries)))
    return out


@pytest_twisted.inlineCallbacks
def test_a_qemu_vm_network_boots_through_kraken(
    bootnet: BootNet, servers: Any, pki: Path, tmp_path: Path
) -> Any:
    kernel, module = yield deferToThread(vm_assets)
    initrd = initramfs(module, tmp_path / "initrd.gz")
    origin, tracker = start_cluster(servers, pki, tmp_path)
    agent = servers.start(
        "kraken-agent",
        {**agent_config(pki, tmp_path / "agent", tracker.port("http")),
         "listen": [f"tcp:0:interface={bootnet.server_ip}"]},
        name="agent",
    )  # fmt: skip
    http_port = free_port(bootnet.server_ip)
    config = state_config(
        pki, tmp_path, modules=["sim", "freebusy", "pxe"],
        module_config={
            "sim": {"latency": 0.05, "timeout": 5},
            "pxe": {"server_ip": bootnet.server_ip, "interface": bootnet.bridge, "http_port": http_port,
                    "agent_url": f"http://{bootnet.server_ip}:{agent.port('http')}",
                    "boot_root": "/usr/lib/ipxe", "dhcp_timeout": 300, "fetch_timeout": 300,
                    "boot_timeout": 300},
        },
    )  # fmt: skip
    state = servers.start("kraken-state", config, name="state")
    api = client(pki, state)
    api.post("/cfg/node", {
        "id": VM_NODE, "nodename": "vm1", "platform": "sim", "parentId": PARENT_ID, "physState": "POWER_ON",
        "extensions": [pxe_client(VM_MAC, f"{bootnet.prefix}.50")],
    })  # fmt: skip
    pushed = yield deferToThread(
        cli, "state", "--url", f"https://127.0.0.1:{state.port('http')}", "--pki", str(pki), "image", "push",
        "tiny", "--kernel", str(kernel), "--initrd", str(initrd), "--cmdline", "console=ttyS0 panic=-1",
        "--node", "vm1", "--origin", f"127.0.0.1:{origin.port('http')}",
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr

    tap = f"{bootnet.bridge}t"
    subprocess.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], check=True)
    try:
        subprocess.run(["ip", "link", "set", tap, "master", bootnet.bridge, "up"], check=True)
        vm = yield deferToThread(
            subprocess.run,
            ["qemu-system-x86_64", "-accel", "tcg", "-m", "512", "-nographic",
             "-no-reboot", "-boot", "n",
             "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
             "-device", f"e1000,netdev=n0,mac={VM_MAC},romfile={ROM}"],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        subprocess.run(["ip", "link", "del", tap], capture_output=True)
    output = vm.stdout
    (tmp_path / "console.log").write_text(output)
    assert MARKER in output, f"qemu: {vm.stderr}\nconsole:\n{output[-3000:]}\nstate:\n{state.log()[-3000:]}"
    assert f"kraken.node={VM_NODE}" in output and "KRAKEN-REPORTED" in output
    dsc = wait_for(lambda: api.get(f"/dsc/node/{VM_NODE}"), what="the VM's Dsc")
    pxe = next(e for e in dsc["extensions"] if e["@type"].endswith("PXE.Client"))
    assert pxe["state"] == "BOOTED"
