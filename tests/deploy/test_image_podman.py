"""The container image (scripts/build-image.sh) as a kraken cluster under podman
(scripts/podman-cluster.sh: one pod, a container per server), checked end to end: kraken doctor
inside the pod, skopeo pushing to its proxy and pulling from its agent, containerd pulling
through the agent as a registry mirror, and the image distributing itself: pushed into the
cluster, pulled back by containerd and by podman through the agent, and run.

Slow (the build takes minutes) and root-only. KRAKEN_TEST_IMAGE_LAYOUT=DIR reuses a layout
scripts/build-image.sh made instead of building one. The host reaches the pod only on
127.0.0.1 ports published at random.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kraken.cli.cluster import built_servers
from tests.deploy.image_support import Layout, run
from tests.integration.registry_support import build_oci_layout, skopeo
from tests.support import REPO, free_ports

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(os.geteuid() != 0, reason="rootful podman and containerd need root"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("podman", "mmdebstrap", "umoci", "skopeo", "containerd")),
        reason="needs podman, mmdebstrap, umoci, skopeo and containerd (bash scripts/setup.sh)",
    ),
]

MIRRORED = "kraken.test"
SERVERS = [name.removeprefix("kraken-") for name in built_servers()]


@dataclass(frozen=True)
class Pod:
    name: str
    proxy: str
    registry: str
    env: dict[str, str]
    dashboard: str
    dashboard_ws_port: int


@pytest.fixture(scope="module")
def pod(image: str, podman_env: dict[str, str]) -> Iterator[Pod]:
    proxy_port, registry_port, dashboard_port, dashboard_ws_port = free_ports(4)
    name = f"kraken-test-{secrets.token_hex(4)}"
    env = dict(podman_env, KRAKEN_POD=name, KRAKEN_PROXY_PORT=str(proxy_port),
               KRAKEN_REGISTRY_PORT=str(registry_port), KRAKEN_DASHBOARD_PORT=str(dashboard_port),
               KRAKEN_DASHBOARD_WS_PORT=str(dashboard_ws_port))
    script = str(REPO / "scripts" / "podman-cluster.sh")
    try:
        run("bash", script, "up", image, env=env, timeout=300)
        yield Pod(name, f"127.0.0.1:{proxy_port}", f"127.0.0.1:{registry_port}", env,
                  f"127.0.0.1:{dashboard_port}", dashboard_ws_port)
    finally:
        subprocess.run(["bash", script, "purge"], env=env, capture_output=True, check=False, timeout=120)


@pytest.fixture(scope="module")
def containerd(work: Path) -> Iterator[Path]:
    """A private containerd (no CRI) whose socket is returned."""
    root = work / "containerd"
    root.mkdir()
    socket = root / "c.sock"
    config = root / "config.toml"
    config.write_text(
        f'version = 2\nroot = "{root}/root"\nstate = "{root}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{socket}"\n[ttrpc]\n  address = "{root}/t.sock"\n'
    )
    with open(root / "log", "wb") as log:
        proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["ctr", "-a", str(socket), "version"], capture_output=True).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, (root / "log").read_text()
            time.sleep(0.2)
        yield socket
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def hosts_dir(work: Path, pod: Pod) -> Path:
    directory = work / "certs.d"
    run(str(Path(sys.executable).with_name("kraken")), "containerd", "hosts", str(directory),
        "--mirror", f"http://{pod.registry}", "--registry", MIRRORED)
    return directory


def test_doctor_passes_inside_the_pod(pod: Pod) -> None:
    result = run("bash", str(REPO / "scripts" / "podman-cluster.sh"), "check", env=pod.env, timeout=120)
    assert "FAIL" not in result.stdout, result.stdout


def test_every_server_runs_read_only_as_the_kraken_user(pod: Pod) -> None:
    for server in SERVERS:
        container = f"{pod.name}-{server}"
        inspect = json.loads(run("podman", "inspect", container, env=pod.env).stdout)[0]
        assert inspect["State"]["Running"], server
        assert inspect["HostConfig"]["ReadonlyRootfs"] is True, server
        assert run("podman", "exec", container, "id", "-u", env=pod.env).stdout.strip() == "10001"


def test_the_dashboard_is_published_with_its_websocket_port(pod: Pod) -> None:
    with urllib.request.urlopen(f"http://{pod.dashboard}/config.json", timeout=10) as answer:
        config = json.load(answer)
    assert config["ws_port"] == pod.dashboard_ws_port
    with socket.create_connection(("127.0.0.1", pod.dashboard_ws_port), timeout=10):
        pass


def test_skopeo_push_to_proxy_and_pull_from_agent(pod: Pod, work: Path) -> None:
    image = build_oci_layout(work / "hello", "v1", [{"hello.txt": secrets.token_bytes(4096)}])
    skopeo("copy", "--dest-tls-verify=false", f"oci:{image.layout}:v1", f"docker://{pod.proxy}/demo/hello:v1")
    out = work / "hello-pulled"
    skopeo("copy", "--src-tls-verify=false", f"docker://{pod.registry}/demo/hello:v1", f"dir:{out}")
    assert (out / "manifest.json").read_bytes() == image.manifest
    assert [p.read_bytes() for p in out.iterdir() if p.read_bytes() == image.layers[0]]


def test_containerd_pulls_through_the_agent_mirror(
    pod: Pod, containerd: Path, hosts_dir: Path, work: Path
) -> None:
    image = build_oci_layout(work / "mirrored", "v2", [{"data.bin": secrets.token_bytes(8192)}])
    skopeo("copy", "--dest-tls-verify=false", f"oci:{image.layout}:v2", f"docker://{pod.proxy}/demo/mirrored:v2")
    ref = f"{MIRRORED}/demo/mirrored:v2"
    # The hosts.toml's fallback server (https://kraken.test) does not exist: only the agent can answer.
    run("ctr", "-a", str(containerd), "image", "pull", "--hosts-dir", str(hosts_dir), ref, timeout=120)
    listed = run("ctr", "-a", str(containerd), "image", "ls", env=None).stdout
    assert ref in listed and image.manifest_digest in listed, listed


def test_the_image_distributes_itself(
    pod: Pod, layout: Layout, containerd: Path, hosts_dir: Path
) -> None:
    """Pushed into its own cluster, the kraken image comes back through the agent to containerd
    (same manifest digest) and to podman, and the pulled copy runs a kraken server's --help."""
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout.path}:{layout.tag}",
           f"docker://{pod.proxy}/kraken/kraken:{layout.tag}", timeout=600)
    ref = f"{MIRRORED}/kraken/kraken:{layout.tag}"
    run("ctr", "-a", str(containerd), "image", "pull", "--hosts-dir", str(hosts_dir), ref, timeout=600)
    listed = run("ctr", "-a", str(containerd), "image", "ls").stdout
    assert layout.manifest_digest in listed, listed

    pulled = f"{pod.registry}/kraken/kraken:{layout.tag}"
    run("podman", "pull", "--tls-verify=false", pulled, env=pod.env, timeout=600)
    try:
        inspect = run("podman", "image", "inspect", "--format", "{{.Digest}}", pulled, env=pod.env)
        digest = inspect.stdout.strip()
        assert digest == layout.manifest_digest
        result = run("podman", "run", "--rm", "--read-only", pulled, "twistd", "--help", env=pod.env)
        assert "kraken-agent" in result.stdout
    finally:
        subprocess.run(["podman", "rmi", "-f", pulled], env=pod.env, capture_output=True, check=False)


def test_a_second_build_gives_the_same_image(layout: Layout, work: Path) -> None:
    """Reproducible: the same commit (and SOURCE_DATE_EPOCH) builds the same manifest digest.
    With KRAKEN_TEST_IMAGE_LAYOUT, that layout must have been built from this commit."""
    again = Layout(work / "image-again", layout.tag)
    run("bash", str(REPO / "scripts" / "build-image.sh"), str(again.path), timeout=900)
    assert again.manifest_digest == layout.manifest_digest
