"""Two clusters: a tag pushed to cluster A's proxy is replicated, with its blobs, to cluster B."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.integration.p2p_fixtures import origin_config
from tests.integration.registry_http import TLSClient
from tests.integration.registry_support import (
    build_index_config,
    build_oci_layout,
    proxy_config,
    sha256,
    skopeo,
)


def _wait_for_tag(client: TLSClient, tag: str, digest: str, timeout: float = 20) -> None:
    path = f"/tags/{quote(tag, safe='')}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.request("GET", path) == (200, digest.encode()):
            return
        time.sleep(0.1)
    raise AssertionError(f"{tag} never reached {digest} on the remote: {client.request('GET', path)}")


def test_tags_and_blobs_replicate_to_another_cluster(servers: Any, pki: Path, tmp_path: Path) -> None:
    origin_b = servers.start("kraken-origin", origin_config(pki, tmp_path / "ob"), name="origin-b")
    config_b = build_index_config(pki, tmp_path / "bib", origin_b.port("http"))
    index_b = servers.start("kraken-build-index", config_b, name="build-index-b")
    origin_a = servers.start("kraken-origin", origin_config(pki, tmp_path / "oa"), name="origin-a")
    config_a = build_index_config(pki, tmp_path / "bia", origin_a.port("http"))
    config_a["buildindex"]["remotes"] = {f"127.0.0.1:{index_b.port('http')}": ["^test/"]}
    index_a = servers.start("kraken-build-index", config_a, name="build-index-a")
    proxy_a = servers.start("kraken-proxy", proxy_config(pki, tmp_path / "pa", origin_a.port("http"),
                                                         index_a.port("http")), name="proxy-a")

    image = build_oci_layout(tmp_path / "layout", "v1", [{"r.txt": b"replicate me\n" * 50}])
    address_a = f"127.0.0.1:{proxy_a.port('registry')}"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{image.layout}:v1", f"docker://{address_a}/test/rep:v1")
    skopeo("copy", "--dest-tls-verify=false", f"oci:{image.layout}:v1", f"docker://{address_a}/other/rep:v1")

    remote = TLSClient(pki, index_b.port("http"))
    _wait_for_tag(remote, "test/rep:v1", image.manifest_digest)
    origin_http = TLSClient(pki, origin_b.port("http"))
    for blob in (image.manifest, image.config, *image.layers):
        status, _ = origin_http.request("HEAD", f"/internal/namespace/test%2Frep/blobs/{sha256(blob)}")
        assert status == 200
    assert remote.request("GET", "/tags/other%2Frep:v1")[0] == 404  # not matched by ^test/

    # a moved tag replicates too (the original skipped tags the remote already had)
    moved = build_oci_layout(tmp_path / "moved", "v1", [{"r.txt": b"moved\n"}])
    skopeo("copy", "--dest-tls-verify=false", f"oci:{moved.layout}:v1", f"docker://{address_a}/test/rep:v1")
    _wait_for_tag(remote, "test/rep:v1", moved.manifest_digest)

    # cluster B serves the image through its own proxy
    proxy_b = servers.start("kraken-proxy", proxy_config(pki, tmp_path / "pb", origin_b.port("http"),
                                                         index_b.port("http")), name="proxy-b")
    inspected = skopeo("inspect", "--tls-verify=false", f"docker://127.0.0.1:{proxy_b.port('registry')}/test/rep:v1")
    assert json.loads(inspected.stdout)["Digest"] == moved.manifest_digest
