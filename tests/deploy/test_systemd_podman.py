"""deploy/systemd/kraken@.service running for real: systemd as PID 1 in a podman container
(Debian bookworm with systemd and python3), kraken mounted from the built image at
/opt/kraken, deploy/config as /etc/kraken and a dev PKI whose keys only root may read. All
instances (one per server) start under the unit's hardening and `kraken doctor` passes against them.

Slow and root-only, like test_image_podman.py (same image fixture).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kraken.cli.cluster import built_servers
from tests.deploy.image_support import run
from tests.support import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(os.geteuid() != 0, reason="rootful podman needs root"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("podman", "mmdebstrap", "umoci", "skopeo")),
        reason="needs podman, mmdebstrap, umoci and skopeo (bash scripts/setup.sh)",
    ),
]

SERVERS = [name.removeprefix("kraken-") for name in built_servers()]


@pytest.fixture(scope="module")
def systemd_image(work: Path, podman_env: dict[str, str]) -> Iterator[str]:
    """Debian with systemd and python3; /opt/kraken points into the kraken image mounted at
    /kraken-image (its virtual environment's python is /usr/bin/python3, present here too)."""
    rootfs = work / "systemd-rootfs.tar"
    run(
        "mmdebstrap", "--quiet", "--mode=root", "--variant=essential",
        "--include=systemd,systemd-sysv,dbus,python3", "--format=tar",
        '--customize-hook=mkdir -p "$1/kraken-image" && ln -s /kraken-image/opt/kraken "$1/opt/kraken"',
        "bookworm", str(rootfs), timeout=900,
    )
    name = f"localhost/kraken-test-systemd-{secrets.token_hex(4)}:1"
    run("podman", "import", str(rootfs), name, env=podman_env)
    rootfs.unlink()
    yield name
    subprocess.run(["podman", "rmi", "-f", name], env=podman_env, capture_output=True, check=False)


@pytest.fixture(scope="module")
def booted(systemd_image: str, image: str, work: Path, podman_env: dict[str, str]) -> Iterator[str]:
    etc = work / "systemd-etc"
    shutil.copytree(REPO / "deploy" / "config", etc)
    run(str(Path(sys.executable).with_name("kraken")), "certs", "dev", str(etc / "pki"))
    assert (etc / "pki" / "origin.key").stat().st_mode & 0o077 == 0
    for suffix in ("pem", "key"):  # the dashboard's certificate has role client
        shutil.copy(etc / "pki" / f"client.{suffix}", etc / "pki" / f"dashboard.{suffix}")
    name = f"kraken-test-systemd-{secrets.token_hex(4)}"
    run(
        "podman", "run", "-d", "--name", name, "--systemd=always", "--network=none",
        "--mount", f"type=image,source={image},destination=/kraken-image",
        "-v", f"{etc}:/etc/kraken:ro",
        "-v", f"{REPO / 'deploy' / 'systemd' / 'kraken@.service'}:/etc/systemd/system/kraken@.service:ro",
        systemd_image, "/sbin/init", env=podman_env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            state = subprocess.run(
                ["podman", "exec", name, "systemctl", "is-system-running"],
                capture_output=True, text=True, env=podman_env, check=False,
            ).stdout.strip()
            if state in ("running", "degraded"):
                break
            assert time.monotonic() < deadline, f"systemd did not boot: {state}"
            time.sleep(0.5)
        yield name
    finally:
        remove = ["podman", "rm", "-f", "-t", "0", name]
        subprocess.run(remove, env=podman_env, capture_output=True, check=False)


def exec_in(container: str, env: dict[str, str], *args: str, timeout: float = 120) -> str:
    return run("podman", "exec", container, *args, env=env, timeout=timeout).stdout


def test_every_server_runs_under_the_hardened_unit(booted: str, podman_env: dict[str, str]) -> None:
    units = [f"kraken@{server}.service" for server in SERVERS]
    exec_in(booted, podman_env, "systemctl", "start", *units)
    kraken = ["podman", "exec", "-w", "/tmp", booted, "/opt/kraken/bin/kraken"]
    # Type=simple: started is not yet listening. The example pipelines go in once the pipeline
    # server answers (kraken doctor calls one), then every check must pass.
    for command in (
        ["pipeline", "apply", "/kraken-image/usr/share/kraken/pipeline-project"],
        ["doctor", "--pki", "/etc/kraken/pki"],
    ):
        deadline = time.monotonic() + 60
        while True:
            result = subprocess.run(
                [*kraken, *command], capture_output=True, text=True, env=podman_env, check=False, timeout=120
            )
            if result.returncode == 0:
                break
            assert time.monotonic() < deadline, result.stdout + result.stderr
            time.sleep(1)

    uids = set()
    for unit in units:
        assert exec_in(booted, podman_env, "systemctl", "is-active", unit).strip() == "active", unit
        pid = exec_in(booted, podman_env, "systemctl", "show", "-p", "MainPID", "--value", unit).strip()
        status = exec_in(booted, podman_env, "cat", f"/proc/{pid}/status")
        uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
        assert uid != 0, unit
        uids.add(uid)
    assert len(uids) == len(units), "each server has its own transient user"

    origin = "kraken@origin.service"
    # The state directory is the server's alone; the rest of the system is read-only to it.
    listing = exec_in(booted, podman_env, "ls", "-ln", "/var/lib/private/kraken")
    assert re.search(r"^drwx------ .* origin$", listing, re.M), listing
    journal = exec_in(booted, podman_env, "journalctl", "-u", origin, "--no-pager")
    assert "origin listening for http on port 15002" in journal
