"""Pathological JSON wherever a kraken component reads JSON that another party wrote (real
processes): registry manifests pushed by clients, answers of origins, trackers and build-indexes
to the components that call them, commands on the state websocket, server answers read by the
``kraken`` command. Each gets the protocol's error (``400 MANIFEST_INVALID``, a 502, a message
on the socket, an exit code), never a 500, a traceback or a dropped connection, and the reader
keeps working."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.hostile.rig import huge_int, nested
from tests.integration.registry_http import Registry
from tests.support import ServerProcess

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REPO = "hostile/json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(data: bytes) -> bytes:
    fields = {"mediaType": "application/octet-stream", "digest": sha256(data), "size": len(data)}
    return json.dumps(fields).encode()


def manifest_bodies(config: bytes) -> dict[str, bytes]:
    """Manifests that a lenient reader would take or choke on, around a valid *config* descriptor."""
    head = b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'", "config": '
    head += descriptor(config)
    return {
        "nested 900 in annotations": head + b', "layers": [], "annotations": ' + nested(900) + b"}",
        "nested 100000": head + b', "layers": ' + nested(100_000) + b"}",
        "bare nested 100000": nested(100_000),
        "5000-digit size": head.replace(b'"size": ' + str(len(config)).encode(), b'"size": ' + huge_int(5000))
        + b', "layers": []}',
        "size over int64": head.replace(b'"size": ' + str(len(config)).encode(), b'"size": ' + huge_int(30))
        + b', "layers": []}',
        "NaN": head + b', "layers": [], "annotations": {"x": NaN}}',
        "-Infinity schemaVersion": head.replace(b'"schemaVersion": 2', b'"schemaVersion": -Infinity')
        + b', "layers": []}',
        "duplicate layers key": head + b', "layers": [], "layers": [' + descriptor(b"other") + b"]}",
        "invalid UTF-8": head + b', "layers": [], "annotations": {"x": "\xff\xfe"}}',
        "UTF-8 surrogate": head + b', "layers": [], "annotations": {"x": "\xed\xa0\x80"}}',
    }


def standalone_proxy(servers: ServerProcess.Pool, root: Path) -> ServerProcess:
    return servers.start("kraken-proxy", {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "proxy": {"storage": str(root)},
    }, name="proxy")


def push_blob(reg: Registry, data: bytes) -> str:
    digest = sha256(data)
    put = reg.upload(REPO, data, digest)
    assert put.status == 201, (put.status, put.body)
    return digest


def assert_no_traceback(*processes: ServerProcess) -> None:
    for process in processes:
        log = process.log()
        assert "Traceback" not in log and "Unhandled" not in log, (process, log[-3000:])


# -- the registry: manifests pushed by clients ---------------------------------------------------

def test_manifest_put_answers_400_manifest_invalid(servers: ServerProcess.Pool, tmp_path: Path) -> None:
    proxy = standalone_proxy(servers, tmp_path / "proxy")
    reg = Registry("127.0.0.1", proxy.port("registry"))
    config = b'{"architecture": "amd64", "os": "linux"}'
    push_blob(reg, config)
    for name, body in manifest_bodies(config).items():
        for reference in ("v1", sha256(body)):
            reply = reg.put_manifest(REPO, reference, body, OCI_MANIFEST)
            assert reply.status == 400, (name, reference, reply.status, reply.body[:300])
            assert reply.error_codes() == ["MANIFEST_INVALID"], (name, reply.body[:300])
        assert reg.request("GET", f"/v2/{REPO}/manifests/{sha256(body)}").status == 404, name
    good = b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'", "config": ' \
        + descriptor(config) + b', "layers": []}'
    assert reg.put_manifest(REPO, "v1", good, OCI_MANIFEST).status == 201
    assert reg.request("GET", f"/v2/{REPO}/manifests/v1").body == good
    assert_no_traceback(proxy)


def test_a_pathological_blob_pulled_as_a_manifest_is_unknown(
    servers: ServerProcess.Pool, tmp_path: Path
) -> None:
    """A blob is whatever was pushed; pulled as a manifest by its digest it must be a clean 404."""
    proxy = standalone_proxy(servers, tmp_path / "proxy")
    reg = Registry("127.0.0.1", proxy.port("registry"))
    for name, body in manifest_bodies(b"{}").items():
        digest = push_blob(reg, body)
        reply = reg.request("GET", f"/v2/{REPO}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
        assert reply.status == 404 and reply.error_codes() == ["MANIFEST_UNKNOWN"], (name, reply.status)
    assert reg.request("GET", "/v2/").status == 200
    assert_no_traceback(proxy)
