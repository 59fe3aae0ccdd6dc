"""Helpers for the registry tests: a tiny deterministic OCI image layout, skopeo, docker-registry."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port, tls_section

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    layout: Path
    tag: str
    manifest: bytes
    config: bytes
    layers: list[bytes]

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest)


def _layer(files: dict[str, bytes]) -> tuple[bytes, bytes]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as g:
        g.write(tar_bytes)
    return tar_bytes, gz.getvalue()


def build_oci_layout(directory: Path, tag: str = "v1", layers: list[dict[str, bytes]] | None = None) -> Image:
    """Write an OCI image layout with one image *tag* to *directory*."""
    layers = layers or [{"hello.txt": b"hello from kraken\n"}]
    blobs_dir = directory / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = sha256(data)
        (blobs_dir / digest.split(":")[1]).write_bytes(data)
        return digest

    built = [_layer(files) for files in layers]
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256(raw) for raw, _ in built]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": put(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": put(gz), "size": len(gz)} for _, gz in built],
    }, sort_keys=True).encode()
    put(manifest)
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }]}
    (directory / "index.json").write_text(json.dumps(index))
    return Image(directory, tag, manifest, config, [gz for _, gz in built])


def skopeo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    result = subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result



class DockerRegistry:
    """Debian's docker-registry (CNCF distribution) on a loopback port, as reference or upstream."""

    def __init__(self, workdir: Path, htpasswd: Path | None = None,
                 extra: dict[str, Any] | None = None, port: int | None = None) -> None:
        if shutil.which("docker-registry") is None:
            pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(workdir / "data")}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{self.port}"},
        }
        if htpasswd is not None:
            config["auth"] = {"htpasswd": {"realm": "kraken-test", "path": str(htpasswd)}}
        config.update(extra or {})
        self.config_file = workdir / "config.yml"
        self.config_file.write_text(json.dumps(config))
        self.log = open(workdir / "registry.log", "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.config_file)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=1)
                return
            except urllib.error.HTTPError:
                return  # 401 with auth: it is up
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("docker-registry did not start")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def build_index_config(pki: Path, root: Path, origin_port: int) -> dict[str, Any]:
    return {
        "listen": ["tls:tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "build-index"),
        "buildindex": {"storage": str(root), "origins": [f"127.0.0.1:{origin_port}"]},
    }


def proxy_config(pki: Path, root: Path, origin_port: int, index_port: int) -> dict[str, Any]:
    return {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "proxy"),
        "proxy": {
            "storage": str(root),
            "origins": [f"127.0.0.1:{origin_port}"],
            "build_index": f"127.0.0.1:{index_port}",
        },
    }
