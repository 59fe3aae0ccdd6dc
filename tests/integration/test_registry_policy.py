"""Immutable tags and retention rules on real servers: skopeo through the proxy, the build-index's
``POST /retention``, and a standalone proxy expiring its own tags on a timer."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from tests.integration.p2p_fixtures import origin_config
from tests.integration.registry_http import Registry, TLSClient
from tests.integration.registry_support import (
    OCI_MANIFEST,
    build_index_config,
    build_oci_layout,
    proxy_config,
    sha256,
    skopeo,
)
from tests.support import run_twistd


def _cluster(servers: Any, pki: Path, tmp_path: Path) -> tuple[Any, Any]:
    origin = servers.start("kraken-origin", origin_config(pki, tmp_path / "o"), name="origin")
    config = build_index_config(pki, tmp_path / "bi", origin.port("http"))
    config["buildindex"].update({
        "immutable_tags": [{"repository": "prod/.*", "tags": r"v\d+(\.\d+)*"}],
        "retention": [{"repository": "ci/.*", "keep_last": 2, "keep_tags": "release-.*"}],
        "retention_interval": 0,
    })
    index = servers.start("kraken-build-index", config, name="build-index")
    proxy = servers.start("kraken-proxy", proxy_config(pki, tmp_path / "p", origin.port("http"),
                                                       index.port("http")), name="proxy")
    return index, proxy


def test_immutable_tags_and_retention_through_the_build_index(servers: Any, pki: Path,
                                                              tmp_path: Path) -> None:
    index, proxy = _cluster(servers, pki, tmp_path)
    address = f"127.0.0.1:{proxy.port('registry')}"
    reg = Registry("127.0.0.1", proxy.port("registry"))
    first = build_oci_layout(tmp_path / "a", "v1", [{"a.txt": b"first"}])
    second = build_oci_layout(tmp_path / "b", "v1", [{"b.txt": b"second"}])

    skopeo("copy", "--dest-tls-verify=false", f"oci:{first.layout}:v1", f"docker://{address}/prod/app:v1")
    # the same image again is fine; other content under the immutable tag is refused
    skopeo("copy", "--dest-tls-verify=false", f"oci:{first.layout}:v1", f"docker://{address}/prod/app:v1")
    moved = subprocess.run(["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
                            f"oci:{second.layout}:v1", f"docker://{address}/prod/app:v1"],
                           capture_output=True, text=True, timeout=120)
    assert moved.returncode != 0 and "denied" in moved.stderr.lower(), moved.stderr
    put = reg.put_manifest("prod/app", "v1", second.manifest, OCI_MANIFEST)
    assert put.status == 403 and put.error_codes() == ["DENIED"]
    assert "immutable" in put.json()["errors"][0]["message"]
    removed = reg.request("DELETE", "/v2/prod/app/manifests/v1")
    assert removed.status == 403 and removed.error_codes() == ["DENIED"]
    got = reg.request("GET", "/v2/prod/app/manifests/v1")
    assert got.header("Docker-Content-Digest") == first.manifest_digest
    # tags outside the pattern stay mutable
    for image in (first, second):
        assert reg.put_manifest("prod/app", "latest", image.manifest, OCI_MANIFEST).status == 201
    assert reg.request("DELETE", "/v2/prod/app/manifests/latest").status == 202

    # retention: ci/* keeps its two newest tags and every release-* tag
    for tag in ("release-1", "t1", "t2", "t3", "t4"):
        assert reg.put_manifest("ci/app", tag, first.manifest, OCI_MANIFEST).status == 201
        time.sleep(0.02)  # distinct push times
    assert reg.put_manifest("prod/app", "old", first.manifest, OCI_MANIFEST).status == 201
    operator = TLSClient(pki, index.port("http"))
    status, body = operator.request("POST", "/retention?dry_run=true")
    assert status == 200 and json.loads(body) == {"dry_run": True, "expired": ["ci/app:t1", "ci/app:t2"]}
    assert reg.request("GET", "/v2/ci/app/tags/list").json()["tags"] == ["release-1", "t1", "t2", "t3", "t4"]
    assert TLSClient(pki, index.port("http"), role="agent").request("POST", "/retention")[0] == 403
    status, body = operator.request("POST", "/retention")
    assert status == 200 and json.loads(body)["expired"] == ["ci/app:t1", "ci/app:t2"]
    assert reg.request("GET", "/v2/ci/app/tags/list").json()["tags"] == ["release-1", "t3", "t4"]
    assert reg.request("GET", "/v2/prod/app/tags/list").json()["tags"] == ["old", "v1"]


def test_standalone_proxy_expires_its_own_tags(servers: Any, tmp_path: Path) -> None:
    proxy = servers.start("kraken-proxy", {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "proxy": {"storage": str(tmp_path / "p"), "retention_interval": 0.3,
                  "retention": [{"repository": "ci/.*", "keep_last": 1}],
                  "immutable_tags": [{"repository": ".*", "tags": "stable"}]},
    }, name="proxy")
    reg = Registry("127.0.0.1", proxy.port("registry"))
    image = build_oci_layout(tmp_path / "a", "v1", [{"a.txt": b"first"}])
    other = build_oci_layout(tmp_path / "b", "v1", [{"b.txt": b"second"}])
    for blob in (image.config, *image.layers, other.config, *other.layers):
        assert reg.upload("ci/app", blob, sha256(blob)).status == 201
    for tag in ("a", "b", "stable"):
        assert reg.put_manifest("ci/app", tag, image.manifest, OCI_MANIFEST).status == 201
        time.sleep(0.02)
    put = reg.put_manifest("ci/app", "stable", other.manifest, OCI_MANIFEST)
    assert put.status == 403 and put.error_codes() == ["DENIED"]
    deadline = time.monotonic() + 10
    def tags() -> list[str]:
        return list(reg.request("GET", "/v2/ci/app/tags/list").json()["tags"])

    while tags() != ["stable"] and time.monotonic() < deadline:
        time.sleep(0.1)
    # "stable" is the newest and immutable; a and b expired
    assert reg.request("GET", "/v2/ci/app/tags/list").json()["tags"] == ["stable"]


def test_bad_rules_stop_the_server_with_the_key(tmp_path: Path) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(yaml.safe_dump({"proxy": {"storage": str(tmp_path / "p"),
                                                "retention": [{"repository": "x"}]}}))
    result = run_twistd("kraken-proxy", "--config", str(config))
    assert result.returncode != 0
    assert "proxy.retention[0]: name at least one of keep_last" in result.stdout + result.stderr
    config.write_text(yaml.safe_dump({"proxy": {"storage": str(tmp_path / "p"), "build_index": "127.0.0.1:1",
                                                "immutable_tags": [{"repository": ".*", "tags": "v1"}]}}))
    result = run_twistd("kraken-proxy", "--config", str(config))
    assert result.returncode != 0 and "buildindex.immutable_tags" in result.stdout + result.stderr
