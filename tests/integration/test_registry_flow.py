"""Push to kraken-proxy, blobs land on a real kraken-origin, tags on a real kraken-build-index.

A second proxy with an empty cache then serves the image from the origins, and the
build-index refuses tags whose manifest or blobs are not on the origins.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.integration.p2p_fixtures import origin_config
from tests.integration.registry_http import Registry, TLSClient
from tests.integration.registry_support import (
    build_index_config,
    build_oci_layout,
    proxy_config,
    sha256,
    skopeo,
)
from tests.support import free_ports, tls_section


@pytest.fixture
def cluster(servers: Any, pki: Path, tmp_path: Path) -> dict[str, Any]:
    origin = servers.start("kraken-origin", origin_config(pki, tmp_path / "o", tmp_path / "backend"),
                           name="origin")
    index = servers.start("kraken-build-index", build_index_config(pki, tmp_path / "bi", origin.port("http")),
                          name="build-index")
    proxy = servers.start("kraken-proxy", proxy_config(pki, tmp_path / "p1", origin.port("http"),
                                                       index.port("http")), name="proxy")
    return {"origin": origin, "index": index, "proxy": proxy}


def test_push_lands_on_origins_and_build_index(cluster: dict[str, Any], servers: Any, pki: Path,
                                               tmp_path: Path) -> None:
    origin, index, proxy = cluster["origin"], cluster["index"], cluster["proxy"]
    image = build_oci_layout(tmp_path / "layout", "v1", [{"a.txt": b"A" * 5000}, {"b.txt": b"B" * 7000}])
    address = f"127.0.0.1:{proxy.port('registry')}"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{image.layout}:v1", f"docker://{address}/test/hello:v1")

    tags = TLSClient(pki, index.port("http"))
    status, body = tags.request("GET", f"/tags/{quote('test/hello:v1', safe='')}")
    assert status == 200 and body.decode() == image.manifest_digest
    status, body = tags.request("GET", "/list/test%2Fhello:")
    assert status == 200 and json.loads(body)["result"] == ["test/hello:v1"]

    origin_http = TLSClient(pki, origin.port("http"))
    for blob in (image.manifest, image.config, *image.layers):
        status, _ = origin_http.request("HEAD", f"/internal/namespace/test%2Fhello/blobs/{sha256(blob)}")
        assert status == 200, sha256(blob)

    # a fresh proxy has nothing cached: everything comes back from the origins
    fresh = servers.start("kraken-proxy", proxy_config(pki, tmp_path / "p2", origin.port("http"),
                                                       index.port("http")), name="proxy-2")
    fresh_address = f"127.0.0.1:{fresh.port('registry')}"
    out = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", f"docker://{fresh_address}/test/hello:v1", f"dir:{out}")
    assert (out / "manifest.json").read_bytes() == image.manifest
    for layer in image.layers:
        assert (out / sha256(layer).split(":")[1]).read_bytes() == layer
    listed = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{fresh_address}/test/hello").stdout)
    assert listed["Tags"] == ["v1"]

    # a moved tag resolves to the new digest at once
    moved = build_oci_layout(tmp_path / "layout2", "v1", [{"c.txt": b"moved"}])
    skopeo("copy", "--dest-tls-verify=false", f"oci:{moved.layout}:v1", f"docker://{address}/test/hello:v1")
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{fresh_address}/test/hello:v1").stdout)
    assert inspected["Digest"] == moved.manifest_digest


def test_build_index_refuses_missing_dependencies(cluster: dict[str, Any], pki: Path) -> None:
    tags = TLSClient(pki, cluster["index"].port("http"), role="proxy")
    unknown = sha256(b"no such manifest")
    status, body = tags.request("PUT", f"/tags/{quote('test/x:v1', safe='')}/digest/{unknown}")
    assert status == 424 and json.loads(body)["error"]["code"] == "MISSING_DEPENDENCY"
    status, body = tags.request("PUT", "/tags/test%2Fx:v1/digest/sha256:nothex")
    assert status == 400 and json.loads(body)["error"]["code"] == "DIGEST_INVALID"
    status, body = tags.request("PUT", f"/tags/Bad%20Name:v1/digest/{unknown}")
    assert status == 400 and json.loads(body)["error"]["code"] == "NAME_INVALID"
    status, _ = tags.request("GET", "/tags/test%2Fx:v1")
    assert status == 404


def test_build_index_copies_tags_to_neighbours(servers: Any, pki: Path, tmp_path: Path) -> None:
    ports = free_ports(2)
    indexes = []
    for i, port in enumerate(ports):
        other = ports[1 - i]
        indexes.append(servers.start("kraken-build-index", {
            "listen": [f"tls:tcp:{port}:interface=127.0.0.1"],
            "tls": tls_section(pki, "build-index"),
            "buildindex": {"storage": str(tmp_path / f"bi{i}"), "cluster": [f"127.0.0.1:{other}"]},
        }, name=f"build-index-{i}"))
    first = TLSClient(pki, ports[0], role="proxy")
    second = TLSClient(pki, ports[1], role="proxy")
    digest = sha256(b"manifest")
    status, _ = first.request("PUT", f"/tags/test%2Fdup:v1/digest/{digest}")
    assert status == 200
    deadline = time.monotonic() + 10
    while second.request("GET", "/tags/test%2Fdup:v1")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert second.request("GET", "/tags/test%2Fdup:v1") == (200, digest.encode())
    # only build-indexes may send copies
    status, _ = second.request("PUT", f"/internal/duplicate/tags/test%2Fdup:v1/digest/{sha256(b'x')}")
    assert status == 403
    assert second.request("DELETE", "/internal/duplicate/tags/test%2Fdup:v1")[0] == 403
    assert second.request("GET", "/tags/test%2Fdup:v1") == (200, digest.encode())
    # a removal travels too
    assert first.request("DELETE", "/tags/test%2Fdup:v1")[0] == 200
    deadline = time.monotonic() + 10
    while second.request("GET", "/tags/test%2Fdup:v1")[0] != 404 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert second.request("GET", "/tags/test%2Fdup:v1")[0] == 404


def test_tag_refused_by_build_index_is_a_registry_error(cluster: dict[str, Any], servers: Any, pki: Path,
                                                        tmp_path: Path) -> None:
    origin, index = cluster["origin"].port("http"), cluster["index"].port("http")
    config = proxy_config(pki, tmp_path / "local", origin, index)
    config["proxy"]["origins"] = []  # blobs stay in this proxy: the build-index finds none of them
    proxy = servers.start("kraken-proxy", config, name="proxy-local")
    reg = Registry("127.0.0.1", proxy.port("registry"))
    image = build_oci_layout(tmp_path / "layout")
    for blob in (image.config, *image.layers):
        assert reg.upload("test/local", blob, sha256(blob)).status == 201
    reply = reg.put_manifest("test/local", "v1", image.manifest, "application/vnd.oci.image.manifest.v1+json")
    assert reply.status == 400 and reply.error_codes() == ["MANIFEST_BLOB_UNKNOWN"]
    assert image.manifest_digest in reply.json()["errors"][0]["detail"]["missing"]


def test_deletes_reach_build_index_origins_and_backend(cluster: dict[str, Any], pki: Path,
                                                      tmp_path: Path) -> None:
    origin, index, proxy = cluster["origin"], cluster["index"], cluster["proxy"]
    image = build_oci_layout(tmp_path / "layout", "v1", [{"a.txt": b"delete me" * 500}])
    address = f"127.0.0.1:{proxy.port('registry')}"
    for tag in ("v1", "v2"):
        skopeo("copy", "--dest-tls-verify=false", f"oci:{image.layout}:v1", f"docker://{address}/test/del:{tag}")
    reg = Registry("127.0.0.1", proxy.port("registry"))
    tags = TLSClient(pki, index.port("http"))
    origin_http = TLSClient(pki, origin.port("http"))
    backend = tmp_path / "backend"

    def on_origin(blob: bytes) -> int:
        path = f"/internal/namespace/test%2Fdel/blobs/{sha256(blob)}?local=true"
        return origin_http.request("HEAD", path)[0]

    def wait_for_backend(blob: bytes) -> None:
        deadline = time.monotonic() + 10  # written back asynchronously
        while not (backend / sha256(blob).split(":")[1]).is_file() and time.monotonic() < deadline:
            time.sleep(0.05)

    wait_for_backend(image.manifest)

    # a tag: only the build-index entry goes
    assert reg.request("DELETE", "/v2/test/del/manifests/v2").status == 202
    assert tags.request("GET", "/tags/test%2Fdel:v2")[0] == 404
    assert tags.request("GET", "/tags/test%2Fdel:v1")[0] == 200
    assert on_origin(image.manifest) == 200

    # a manifest by digest: its tags, its bytes on the origin and in the backend
    assert reg.request("DELETE", f"/v2/test/del/manifests/{image.manifest_digest}").status == 202
    assert tags.request("GET", "/tags/test%2Fdel:v1")[0] == 404
    assert on_origin(image.manifest) == 404
    assert not (backend / image.manifest_digest.split(":")[1]).exists()
    assert reg.request("GET", f"/v2/test/del/manifests/{image.manifest_digest}").status == 404

    # a blob: from the proxy's cache, the origin and the backend
    layer = image.layers[0]
    wait_for_backend(layer)
    assert reg.request("DELETE", f"/v2/test/del/blobs/{sha256(layer)}").status == 202
    assert on_origin(layer) == 404
    assert not (backend / sha256(layer).split(":")[1]).exists()
    gone = reg.request("GET", f"/v2/test/del/blobs/{sha256(layer)}")
    assert gone.status == 404 and gone.error_codes() == ["BLOB_UNKNOWN"]
    assert reg.request("DELETE", f"/v2/test/del/blobs/{sha256(layer)}").status == 404

    # only writer roles delete on an origin
    agent = TLSClient(pki, origin.port("http"), role="agent")
    status, _ = agent.request("DELETE", f"/namespace/test%2Fdel/blobs/{sha256(image.config)}")
    assert status == 403
    assert on_origin(image.config) == 200
