"""Shared by the slow deploy tests: the image built once per session (or taken from
KRAKEN_TEST_IMAGE_LAYOUT), loaded into podman, and podman settings that work in sandboxes."""

from __future__ import annotations

import configparser
import os
import resource
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.image_support import Layout, run
from tests.integration.registry_support import skopeo
from tests.support import REPO


@pytest.fixture(scope="session")
def work() -> Iterator[Path]:
    # Short: containerd's socket path must fit in 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="kdeploy-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def podman_env(work: Path) -> dict[str, str]:
    """podman's defaults raise the containers' open-files and process limits above ours, which
    fails where we lack CAP_SYS_RESOURCE (as in this sandbox), and crun refuses hybrid cgroups:
    keep our own limits and use runc."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 4096)
    conf = work / "containers.conf"
    conf.write_text(
        f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        '[engine]\nruntime = "runc"\n'
    )
    return dict(os.environ, CONTAINERS_CONF=str(conf))


@pytest.fixture(scope="session")
def layout(work: Path) -> Layout:
    given = os.environ.get("KRAKEN_TEST_IMAGE_LAYOUT")
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    tag = setup["metadata"]["version"]
    if given:
        return Layout(Path(given), tag)
    out = work / "image"
    run("bash", str(REPO / "scripts" / "build-image.sh"), str(out), timeout=900)
    return Layout(out, tag)


@pytest.fixture(scope="session")
def image(layout: Layout, podman_env: dict[str, str]) -> Iterator[str]:
    name = f"localhost/kraken-test-{secrets.token_hex(4)}:{layout.tag}"
    skopeo("copy", f"oci:{layout.path}:{layout.tag}", f"containers-storage:{name}")
    yield name
    subprocess.run(["podman", "rmi", "-f", name], env=podman_env, capture_output=True, check=False)
