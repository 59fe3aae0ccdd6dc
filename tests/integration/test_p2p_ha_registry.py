"""Uber's scenarios that go through the registry: proxy, build-indexes (one or two clusters), agents.

Images are pushed with skopeo to kraken-proxy and pulled with skopeo from an agent's registry
port; servers are killed (-9), wiped and restarted on the same ports between the steps.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.integration.p2p_ha_rig import Cluster, request, wait_for
from tests.integration.registry_support import Image, build_oci_layout, sha256, skopeo
from tests.support import ServerProcess, free_ports, tls_section


def build_index(
    servers: ServerProcess.Pool, pki: Path, root: Path, port: int, origins: list[str], name: str, **extra: Any
) -> ServerProcess:
    return servers.start("kraken-build-index", {
        "listen": [f"tls:tcp:{port}:interface=127.0.0.1"], "tls": tls_section(pki, "build-index"),
        "buildindex": {"storage": str(root / f"{name}-data"), "origins": origins, "retry_cap": 1.0, **extra},
    }, name=name)


def proxy(
    servers: ServerProcess.Pool, pki: Path, root: Path, origins: list[str], index_port: int
) -> ServerProcess:
    port = free_ports(1)[0]
    section = {"storage": str(root / "proxy-data"), "origins": origins,
               "build_index": f"127.0.0.1:{index_port}"}
    return servers.start("kraken-proxy", {
        "listen": [f"tcp:{port}:interface=127.0.0.1"], "tls": tls_section(pki, "proxy"), "proxy": section,
    }, name="proxy")


def registry_agent(c: Cluster, name: str, index_port: int) -> ServerProcess:
    return c.agent(name, registry={"listen": ["tcp:0:interface=127.0.0.1"],
                                   "build_index": f"127.0.0.1:{index_port}"})


def push(image: Image, registry_port: int, ref: str = "test/ha:v1") -> None:
    target = f"docker://127.0.0.1:{registry_port}/{ref}"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{image.layout}:v1", target)


def pull_matches(image: Image, registry_port: int, out: Path, ref: str = "test/ha:v1") -> bool:
    shutil.rmtree(out, ignore_errors=True)
    skopeo("copy", "--src-tls-verify=false", f"docker://127.0.0.1:{registry_port}/{ref}", f"dir:{out}")
    if (out / "manifest.json").read_bytes() != image.manifest:
        return False
    return all((out / sha256(b).split(":")[1]).read_bytes() == b for b in (image.config, *image.layers))


def blobs_of(image: Image) -> list[str]:
    return [sha256(b).split(":")[1] for b in (image.manifest, image.config, *image.layers)]


def restart(proc: ServerProcess, wipe: Path | None = None) -> None:
    proc.kill()
    if wipe is not None:
        shutil.rmtree(wipe, ignore_errors=True)
    proc.start()


def test_push_then_restart_the_proxy_with_a_wiped_disk_and_pull(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    c = Cluster(servers, pki, tmp_path)
    (index_port,) = free_ports(1)
    build_index(servers, pki, tmp_path, index_port, c.cluster, "bi")
    p = proxy(servers, pki, tmp_path, c.cluster, index_port)
    image = build_oci_layout(tmp_path / "layout", "v1", [{"a.bin": bytes(range(256)) * 4096}])
    push(image, p.port("registry"))
    restart(p, wipe=tmp_path / "proxy-data")
    assert pull_matches(image, p.port("registry"), tmp_path / "out")


@pytest.mark.slow
def test_ha_end_to_end_backend_down_restarts_then_wiped_disks(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    c = Cluster(servers, pki, tmp_path)
    (index_port,) = free_ports(1)
    tags_backend = {"type": "fs", "root": str(tmp_path / "tag-backend")}
    index = build_index(servers, pki, tmp_path, index_port, c.cluster, "bi", backend=tags_backend)
    p = proxy(servers, pki, tmp_path, c.cluster, index_port)
    image = build_oci_layout(tmp_path / "layout", "v1", [{"a.bin": bytes(range(256)) * 4096},
                                                          {"b.txt": b"second layer\n" * 1000}])
    for hex_digest in blobs_of(image):  # the backend refuses every blob of the image: it is "down"
        (c.backend / hex_digest / "in-the-way").mkdir(parents=True)
    push(image, p.port("registry"))
    for origin in c.origins:
        restart(origin)
    restart(index)
    first = registry_agent(c, "a0", index_port)
    assert pull_matches(image, first.port("registry"), tmp_path / "out0")
    for hex_digest in blobs_of(image):  # the backend is back: the write-backs drain
        shutil.rmtree(c.backend / hex_digest)
    assert wait_for(lambda: all((c.backend / h).is_file() for h in blobs_of(image)), 30)
    for origin in c.origins:
        restart(origin, wipe=Path(origin.config["origin"]["store"]))
    restart(index, wipe=tmp_path / "bi-data")
    restart(p, wipe=tmp_path / "proxy-data")
    first.kill()
    second = registry_agent(c, "a1", index_port)
    assert pull_matches(image, second.port("registry"), tmp_path / "out1")


def _wait_for_tag(pki: Path, port: int, tag: str, digest: str, timeout: float = 30) -> bool:
    path = f"/tags/{quote(tag, safe='')}"
    return bool(wait_for(lambda: request(port, "GET", path, pki=pki, role="build-index")
                         == (200, digest.encode()), timeout))


@pytest.mark.slow
def test_two_clusters_replicate_once_the_remote_build_index_is_back(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    a = Cluster(servers, pki, tmp_path / "A", origins=1, prefix="A")
    b = Cluster(servers, pki, tmp_path / "B", origins=1, prefix="B")
    port_a, port_b = free_ports(2)
    remotes = {"remotes": {f"127.0.0.1:{port_b}": ["^test/"]}}
    build_index(servers, pki, tmp_path, port_a, a.cluster, "bia", **remotes)
    p = proxy(servers, pki, tmp_path, a.cluster, port_a)
    image = build_oci_layout(tmp_path / "layout", "v1", [{"r.txt": b"replicate me\n" * 500}])
    push(image, p.port("registry"))  # cluster B's build-index is not running yet
    time.sleep(1)
    build_index(servers, pki, tmp_path, port_b, b.cluster, "bib", origin=b.cluster[0])
    assert _wait_for_tag(pki, port_b, "test/ha:v1", image.manifest_digest)
    agent_b = registry_agent(b, "b0", port_b)
    assert pull_matches(image, agent_b.port("registry"), tmp_path / "out")


def test_a_replica_build_index_replicates_when_the_receiving_one_died(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    a = Cluster(servers, pki, tmp_path / "A", origins=1, prefix="A")
    b = Cluster(servers, pki, tmp_path / "B", origins=1, prefix="B")
    port_a1, port_a2, port_b = free_ports(3)
    remotes = {"remotes": {f"127.0.0.1:{port_b}": ["^test/"]}, "replica_delay": 1.0}
    receiving = build_index(servers, pki, tmp_path, port_a1, a.cluster, "bia1",
                            cluster=[f"127.0.0.1:{port_a2}"], **remotes)
    build_index(servers, pki, tmp_path, port_a2, a.cluster, "bia2", cluster=[f"127.0.0.1:{port_a1}"],
                **remotes)
    p = proxy(servers, pki, tmp_path, a.cluster, port_a1)
    image = build_oci_layout(tmp_path / "layout", "v1", [{"r.txt": b"replica\n" * 500}])
    push(image, p.port("registry"))  # the remote is down: both build-indexes of A queue the copy
    assert _wait_for_tag(pki, port_a2, "test/ha:v1", image.manifest_digest)
    receiving.kill()
    build_index(servers, pki, tmp_path, port_b, b.cluster, "bib", origin=b.cluster[0])
    assert _wait_for_tag(pki, port_b, "test/ha:v1", image.manifest_digest)
    agent_b = registry_agent(b, "b0", port_b)
    assert pull_matches(image, agent_b.port("registry"), tmp_path / "out")
    assert json.loads(skopeo("inspect", "--tls-verify=false",
                             f"docker://127.0.0.1:{agent_b.port('registry')}/test/ha:v1").stdout)["Digest"] \
        == image.manifest_digest
