"""containerd pulls from a kraken-proxy that asks for a login: refused without credentials,
pulled and unpacked with them (containerd tries the token endpoint with POST, then GET)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kraken.registry.accounts import hash_password
from tests.integration.registry_support import build_oci_layout, skopeo

PASSWORD = "ci-secret"


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Path]:
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is not installed (apt-get install containerd)")
    base = tmp_path / "ctrd"
    base.mkdir()
    socket = base / "c.sock"
    (base / "config.toml").write_text(
        'version = 2\n'
        f'root = "{base / "root"}"\n'
        f'state = "{base / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{socket}"\n'
    )
    log = open(base / "containerd.log", "wb")
    proc = subprocess.Popen(["containerd", "--config", str(base / "config.toml")], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not socket.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (base / "containerd.log").read_text()
            time.sleep(0.05)
        yield socket
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _ctr(socket: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ctr", "-a", str(socket), *args], capture_output=True, text=True, timeout=120)


def test_containerd_pulls_with_credentials(containerd: Path, servers: Any, tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text(yaml.safe_dump({
        "robots": {"puller": hash_password(PASSWORD)},
        "users": {"pusher": hash_password(PASSWORD)},
        "grants": [{"repository": "team/.*", "actions": ["pull"], "robots": ["puller"]},
                   {"repository": "team/.*", "actions": ["pull", "push"], "users": ["pusher"]}],
    }))
    proxy = servers.start("kraken-proxy", {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "proxy": {"storage": str(tmp_path / "data")},
        "auth": {"mode": "token", "accounts": str(accounts)},
    }, name="proxy")
    address = f"127.0.0.1:{proxy.port('registry')}"
    image = build_oci_layout(tmp_path / "layout", "v1", [{"etc/motd": b"pulled by containerd\n"}])
    skopeo("copy", "--dest-tls-verify=false", f"--dest-creds=pusher:{PASSWORD}", f"oci:{image.layout}:v1",
           f"docker://{address}/team/app:v1")

    ref = f"{address}/team/app:v1"
    anonymous = _ctr(containerd, "images", "pull", "--plain-http", ref)
    assert anonymous.returncode != 0 and "401" in anonymous.stderr + anonymous.stdout, anonymous.stderr
    wrong = _ctr(containerd, "images", "pull", "--plain-http", "--user", "robot$puller:wrong", ref)
    assert wrong.returncode != 0
    pulled = _ctr(containerd, "images", "pull", "--plain-http", "--user", f"robot$puller:{PASSWORD}", ref)
    assert pulled.returncode == 0, pulled.stderr + pulled.stdout
    listed = _ctr(containerd, "images", "ls")
    assert ref in listed.stdout and image.manifest_digest in listed.stdout, listed.stdout
