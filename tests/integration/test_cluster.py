"""The README's main job: `kraken cluster up` with the example configs, used as a user would."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymemcache.client.base import Client as Memcache

from tests.integration.registry_support import build_oci_layout, skopeo
from tests.support import REPO

KRAKEN = str(Path(sys.executable).with_name("kraken"))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Path]:
    """The example configs copied into a scratch directory and started as one cluster."""
    shutil.copytree(REPO / "etc", tmp_path / "etc")
    proc = subprocess.Popen(
        [KRAKEN, "cluster", "up", "--etc", str(tmp_path / "etc")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 120
    try:
        for line in proc.stdout:
            lines.append(line)
            if "all started" in line:
                break
            assert time.monotonic() < deadline, "".join(lines)
        assert proc.poll() is None, "".join(lines)
        yield tmp_path
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        leftovers = subprocess.run(
            ["pgrep", "-f", str(tmp_path / "etc")], capture_output=True, text=True
        ).stdout
        assert not leftovers.strip(), f"servers still running: {leftovers}"


def test_local_cluster_pushes_pulls_and_publishes(cluster: Path) -> None:
    for name in ("tracker", "origin", "build-index", "agent", "proxy", "pubsub", "state", "pipeline"):
        ports = json.loads((cluster / "run" / f"{name}.ports.json").read_text())
        assert ports, name
    assert (cluster / "run" / "pki" / "ca.pem").exists()

    image = build_oci_layout(cluster / "oci", "v1")
    # the proxy's plain port asks for a login (etc/proxy.yaml auth:); cluster up made the account
    (cluster / "empty-auth.json").write_text("{}")
    anonymous = subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
         f"--authfile={cluster / 'empty-auth.json'}", f"oci:{image.layout}:v1",
         "docker://127.0.0.1:15000/demo/hello:v1"], capture_output=True, text=True, timeout=120,
    )
    assert anonymous.returncode != 0 and "unauthorized" in anonymous.stderr.lower(), anonymous.stderr
    login = "dev:" + (cluster / "run" / "registry" / "password").read_text().strip()
    pushed = skopeo("copy", "--dest-tls-verify=false", f"--dest-creds={login}", f"oci:{image.layout}:v1",
                    "docker://127.0.0.1:15000/demo/hello:v1")
    assert pushed.returncode == 0, pushed.stderr
    pulled = skopeo(
        "copy", "--src-tls-verify=false", "docker://127.0.0.1:5055/demo/hello:v1", f"dir:{cluster / 'pulled'}"
    )
    assert pulled.returncode == 0, pulled.stderr
    assert (cluster / "pulled" / "manifest.json").read_bytes() == image.manifest

    subscriber = Memcache(("127.0.0.1", 12355), default_noreply=False)
    publisher = Memcache(("127.0.0.1", 12355), default_noreply=False)
    assert subscriber.set("subscribe", "news")
    assert publisher.set("publish", b"MESSAGE news 5\r\nhello\r\n")
    assert subscriber.get("messages") == b"MESSAGE news 5\r\nhello"

    with urllib.request.urlopen("http://127.0.0.1:16000/health", timeout=10) as r:
        assert json.loads(r.read())["status"] == "ok"
    with urllib.request.urlopen("http://127.0.0.1:4001/health", timeout=10) as r:
        assert r.status == 200
