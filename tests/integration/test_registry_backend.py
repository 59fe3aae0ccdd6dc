"""The read-through ``registry`` backend against Debian's docker-registry with htpasswd auth."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from kraken.backends.base import BackendError, BlobNotFound, make_backend
from tests.integration.p2p_fixtures import origin_config
from tests.integration.registry_support import (
    DockerRegistry,
    Image,
    build_index_config,
    build_oci_layout,
    proxy_config,
    sha256,
    skopeo,
)

USER, PASSWORD = "kraken", "s3cret"


def _htpasswd(path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt from libc; docker-registry's htpasswd accepts only bcrypt

        hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))
    path.write_text(f"{USER}:{hashed}\n")
    return path


@pytest.fixture
def upstream(tmp_path: Path) -> Any:
    ref = DockerRegistry(tmp_path / "upstream", htpasswd=_htpasswd(tmp_path / "htpasswd"))
    image = build_oci_layout(tmp_path / "layout", "v1", [{"upstream.txt": b"from upstream\n" * 100}])
    skopeo("copy", "--dest-tls-verify=false", f"--dest-creds={USER}:{PASSWORD}", f"oci:{image.layout}:v1",
           f"docker://{ref.address}/test/upstream:v1")
    yield ref, image
    ref.stop()


def _backend_config(address: str, password: str = PASSWORD) -> dict[str, Any]:
    return {"type": "registry", "address": f"http://{address}", "username": USER, "password": password}


@pytest_twisted.inlineCallbacks
def test_backend_reads_blobs_and_tags(upstream: tuple[DockerRegistry, Image], tmp_path: Path) -> Any:
    from twisted.internet import reactor

    ref, image = upstream
    backend = make_backend(_backend_config(ref.address), reactor)
    layer = image.layers[0]
    size = yield backend.stat("test/upstream", sha256(layer).split(":")[1])
    assert size == len(layer)
    dest = tmp_path / "layer"
    yield backend.download("test/upstream", sha256(layer), str(dest))
    assert dest.read_bytes() == layer
    # kraken keeps manifests as blobs: a manifest digest is found under /manifests/
    yield backend.download("test/upstream", image.manifest_digest, str(dest))
    assert dest.read_bytes() == image.manifest
    yield backend.download("test/upstream", "test/upstream:v1", str(dest))
    assert dest.read_text() == image.manifest_digest
    listed = yield backend.list("test/upstream:")
    assert listed == ["test/upstream:v1"]
    with pytest.raises(BlobNotFound):
        yield backend.stat("test/upstream", sha256(b"nothing").split(":")[1])
    with pytest.raises(BlobNotFound):
        yield backend.stat("test/upstream", "test/upstream:nope")
    with pytest.raises(BackendError):
        yield backend.upload("test/upstream", "x", str(dest))

    wrong = make_backend(_backend_config(ref.address, "wrong"), reactor)
    with pytest.raises(BackendError, match="401"):
        yield wrong.stat("test/upstream", sha256(layer))


def test_read_through_pull_via_proxy(upstream: tuple[DockerRegistry, Image], servers: Any, pki: Path,
                                     tmp_path: Path) -> None:
    ref, image = upstream
    backends = [{"namespace": ".*", "backend": _backend_config(ref.address)}]
    origin = servers.start("kraken-origin", origin_config(pki, tmp_path / "o", backends=backends),
                           name="origin")
    index_config = build_index_config(pki, tmp_path / "bi", origin.port("http"))
    index_config["buildindex"]["backend"] = _backend_config(ref.address)
    index = servers.start("kraken-build-index", index_config, name="build-index")
    proxy = servers.start("kraken-proxy", proxy_config(pki, tmp_path / "p", origin.port("http"),
                                                       index.port("http")), name="proxy")
    address = f"127.0.0.1:{proxy.port('registry')}"
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{address}/test/upstream:v1").stdout)
    assert inspected["Digest"] == image.manifest_digest
    out = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", f"docker://{address}/test/upstream:v1", f"dir:{out}")
    assert (out / "manifest.json").read_bytes() == image.manifest
    assert (out / sha256(image.layers[0]).split(":")[1]).read_bytes() == image.layers[0]
