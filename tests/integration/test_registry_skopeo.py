"""Push and pull a real image with skopeo: the same script against kraken-proxy and docker-registry."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.registry_support import DockerRegistry, Image, build_oci_layout, sha256, skopeo
from tests.support import ServerProcess, tls_section


@pytest.fixture(params=["kraken-proxy", "docker-registry"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """``host:port`` of a plain-HTTP registry on loopback."""
    if request.param == "kraken-proxy":
        proc = ServerProcess("kraken-proxy", {
            "listen": ["tcp:0:interface=127.0.0.1"],
            "proxy": {"storage": str(tmp_path / "proxy")},
        }, tmp_path / "proc", []).start()
        try:
            yield f"127.0.0.1:{proc.port('registry')}"
        finally:
            proc.stop()
    else:
        ref = DockerRegistry(tmp_path / "reference")
        try:
            yield ref.address
        finally:
            ref.stop()


def push_pull_script(address: str, image: Image, work: Path, tls: list[str] | None = None) -> None:
    """Push *image*, inspect it, pull it back twice (OCI and dir), convert to Docker schema 2."""
    dest_flags = tls or ["--dest-tls-verify=false"]
    src_flags = [f.replace("--dest-", "--src-") for f in dest_flags]
    plain = [f.replace("--dest-", "--") for f in dest_flags]
    ref = f"docker://{address}/test/hello"
    skopeo("copy", *dest_flags, f"oci:{image.layout}:{image.tag}", f"{ref}:{image.tag}")

    inspected = json.loads(skopeo("inspect", *plain, f"{ref}:{image.tag}").stdout)
    assert inspected["Digest"] == image.manifest_digest
    assert inspected["Layers"] == [sha256(layer) for layer in image.layers]
    raw = skopeo("inspect", "--raw", *plain, f"{ref}:{image.tag}").stdout.encode()
    assert raw == image.manifest

    out = work / "dir"
    skopeo("copy", *src_flags, f"{ref}:{image.tag}", f"dir:{out}")
    assert (out / "manifest.json").read_bytes() == image.manifest
    for layer in image.layers:
        assert (out / sha256(layer).split(":")[1]).read_bytes() == layer

    back = work / "oci"
    skopeo("copy", *src_flags, f"{ref}:{image.tag}", f"oci:{back}:copy")
    index = json.loads((back / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.manifest_digest

    skopeo("copy", "--format", "v2s2", *dest_flags, f"oci:{image.layout}:{image.tag}", f"{ref}:v2s2")
    v2s2 = json.loads(skopeo("inspect", "--raw", *plain, f"{ref}:v2s2").stdout)
    assert v2s2["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert [layer["digest"] for layer in v2s2["layers"]] == inspected["Layers"]

    # registry-to-registry copy within one registry: blobs arrive by cross-repository mount
    skopeo("copy", *src_flags, *dest_flags, f"{ref}:{image.tag}", f"docker://{address}/other/copy:{image.tag}")
    copied = json.loads(skopeo("inspect", *plain, f"docker://{address}/other/copy:{image.tag}").stdout)
    assert copied["Digest"] == image.manifest_digest

    tags = json.loads(skopeo("list-tags", *plain, ref).stdout)["Tags"]
    assert sorted(tags) == sorted([image.tag, "v2s2"])


def test_push_pull_with_skopeo(registry: str, tmp_path: Path) -> None:
    image = build_oci_layout(tmp_path / "layout", "v1", [
        {"hello.txt": b"hello from kraken\n"},
        {"etc/motd": b"two layers\n" * 1000},
    ])
    push_pull_script(registry, image, tmp_path)


def test_push_pull_over_mutual_tls(pki: Path, tmp_path: Path) -> None:
    proc = ServerProcess("kraken-proxy", {
        "listen": ["tls:tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "proxy"),
        "proxy": {"storage": str(tmp_path / "proxy")},
    }, tmp_path / "proc", []).start()
    try:
        certs = tmp_path / "certs"
        certs.mkdir()
        shutil.copy(pki / "ca.pem", certs / "ca.crt")
        shutil.copy(pki / "client.pem", certs / "client.cert")
        shutil.copy(pki / "client.key", certs / "client.key")
        image = build_oci_layout(tmp_path / "layout")
        push_pull_script(f"127.0.0.1:{proc.port('registry')}", image, tmp_path, [f"--dest-cert-dir={certs}"])

        # a certificate of a role the proxy does not admit gets nowhere
        shutil.copy(pki / "tracker.pem", certs / "client.cert")
        shutil.copy(pki / "tracker.key", certs / "client.key")
        with pytest.raises(AssertionError):
            skopeo("inspect", f"--cert-dir={certs}", f"docker://127.0.0.1:{proc.port('registry')}/test/hello:v1")
    finally:
        proc.stop()
