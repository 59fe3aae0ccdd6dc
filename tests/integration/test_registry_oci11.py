"""OCI distribution spec 1.1 over HTTP: the referrers API, ``OCI-Subject``, sha512 digests.

Written from the spec (opencontainers/distribution-spec, spec.md, v1.1). Each test runs
against a standalone ``kraken-proxy`` (referrers in its own directory), a ``kraken-proxy``
whose tags and referrers live in a ``kraken-build-index``, and, as the reference, Debian's
``docker-registry`` 2.8, which predates OCI 1.1: it has no referrers API and sends no
``OCI-Subject``, so those cases are skipped for it with that reason, while everything it does
implement (sha512 blobs, manifests with a ``subject``) is held to the same assertions.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import oras.client
import oras.oci
import pytest

from tests.integration.p2p_fixtures import agent_config, origin_config, tracker_config
from tests.integration.registry_http import Registry, Reply, TLSClient
from tests.integration.registry_support import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    DockerRegistry,
    build_index_config,
    proxy_config,
    sha256,
)
from tests.support import ServerProcess, free_ports, tls_section

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
SIGNATURE = "application/vnd.example.signature.v1"
SBOM = "application/vnd.example.sbom.v1"
NO_REFERRERS = "docker-registry 2.8 predates OCI 1.1: it has no referrers API (404) and sends no OCI-Subject"


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


@pytest.fixture(scope="module", params=["kraken", "kraken-build-index", "docker-registry"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pki: Path
) -> Iterator[tuple[str, Registry]]:
    workdir = tmp_path_factory.mktemp(request.param)
    procs: list[ServerProcess] = []
    try:
        if request.param == "docker-registry":
            ref = DockerRegistry(workdir)
            try:
                yield "docker-registry", Registry("127.0.0.1", ref.port)
            finally:
                ref.stop()
            return
        proxy: dict[str, Any] = {"listen": ["tcp:0:interface=127.0.0.1"],
                                 "proxy": {"storage": str(workdir / "proxy")}}
        if request.param == "kraken-build-index":
            index = ServerProcess("kraken-build-index", {
                "listen": ["tls:tcp:0:interface=127.0.0.1"],
                "tls": tls_section(pki, "build-index"),
                "buildindex": {"storage": str(workdir / "build-index")},
            }, workdir / "bi", []).start()
            procs.append(index)
            proxy["tls"] = tls_section(pki, "proxy")
            proxy["proxy"]["build_index"] = f"127.0.0.1:{index.port('http')}"
        procs.append(ServerProcess("kraken-proxy", proxy, workdir / "p", []).start())
        yield request.param, Registry("127.0.0.1", procs[-1].port("registry"))
    finally:
        for proc in reversed(procs):
            proc.stop()


def has_referrers(kind: str) -> bool:
    return kind != "docker-registry"


def _image(reg: Registry, name: str, seed: str, digest: Any = sha256) -> tuple[bytes, str]:
    """Push a small image (blobs under *digest*'s algorithm); return its manifest and digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = hashlib.sha256(seed.encode()).digest() * 32
    for blob in (config, layer):
        reply = reg.upload(name, blob, digest(blob))
        assert reply.status == 201, reply.body
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest(layer), "size": len(layer)}],
    }).encode()
    return manifest, digest(manifest)


def _artifact(subject: bytes, seed: str, artifact_type: str | None = None, config_type: str = OCI_EMPTY,
              index: bool = False) -> bytes:
    """A manifest referring to the manifest *subject* (spec: image manifest or index with subject)."""
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "subject": {"mediaType": OCI_MANIFEST, "digest": sha256(subject), "size": len(subject)},
        "annotations": {"org.example.seed": seed},
    }
    if index:
        doc.update(mediaType=OCI_INDEX, manifests=[])
    else:
        empty = {"mediaType": OCI_EMPTY, "digest": sha256(EMPTY), "size": 2}
        doc.update(mediaType=OCI_MANIFEST, layers=[empty], config={**empty, "mediaType": config_type})
    if artifact_type is not None:
        doc["artifactType"] = artifact_type
    return json.dumps(doc).encode()


def _put(reg: Registry, name: str, ref: str, body: bytes, media_type: str = OCI_MANIFEST) -> Reply:
    reply = reg.put_manifest(name, ref, body, media_type)
    assert reply.status == 201, reply.body
    return reply


def _referrers(reg: Registry, name: str, subject: str, query: str = "") -> Reply:
    return reg.request("GET", f"/v2/{name}/referrers/{subject}{query}")


# -- referrers and OCI-Subject ---------------------------------------------------------------


def test_manifest_with_subject_is_listed_with_its_descriptor(target: tuple[str, Registry]) -> None:
    kind, reg = target
    name = "oci11/referrers"
    subject, subject_digest = _image(reg, name, "subject")
    _put(reg, name, "v1", subject)
    assert reg.upload(name, EMPTY, sha256(EMPTY)).status == 201
    signature = _artifact(subject, "sig", artifact_type=SIGNATURE)
    sbom = _artifact(subject, "sbom", config_type=SBOM)  # no artifactType: the config's media type
    listing = _artifact(subject, "index", artifact_type=SIGNATURE, index=True)
    untyped_index = _artifact(subject, "bare-index", index=True)
    puts = [_put(reg, name, sha256(m), m, t) for m, t in (
        (signature, OCI_MANIFEST), (sbom, OCI_MANIFEST), (listing, OCI_INDEX), (untyped_index, OCI_INDEX))]
    if not has_referrers(kind):
        assert all(p.header("OCI-Subject") is None for p in puts)
        assert _referrers(reg, name, subject_digest).status == 404
        pytest.skip(NO_REFERRERS)
    assert [p.header("OCI-Subject") for p in puts] == [subject_digest] * 4

    reply = _referrers(reg, name, subject_digest)
    assert reply.status == 200
    assert reply.header("Content-Type") == OCI_INDEX
    assert reply.header("OCI-Filters-Applied") is None
    doc = reply.json()
    assert doc["schemaVersion"] == 2 and doc["mediaType"] == OCI_INDEX
    by_digest = {d["digest"]: d for d in doc["manifests"]}
    assert by_digest == {
        sha256(signature): {"mediaType": OCI_MANIFEST, "digest": sha256(signature), "size": len(signature),
                            "artifactType": SIGNATURE, "annotations": {"org.example.seed": "sig"}},
        sha256(sbom): {"mediaType": OCI_MANIFEST, "digest": sha256(sbom), "size": len(sbom),
                       "artifactType": SBOM, "annotations": {"org.example.seed": "sbom"}},
        sha256(listing): {"mediaType": OCI_INDEX, "digest": sha256(listing), "size": len(listing),
                          "artifactType": SIGNATURE, "annotations": {"org.example.seed": "index"}},
        sha256(untyped_index): {"mediaType": OCI_INDEX, "digest": sha256(untyped_index),
                                "size": len(untyped_index),
                                "annotations": {"org.example.seed": "bare-index"}},
    }
    # a client's artifactType filter, announced by the header
    filtered = _referrers(reg, name, subject_digest, f"?artifactType={SIGNATURE}")
    assert filtered.status == 200 and filtered.header("OCI-Filters-Applied") == "artifactType"
    assert sorted(d["digest"] for d in filtered.json()["manifests"]) == sorted(
        [sha256(signature), sha256(listing)])
    nothing = _referrers(reg, name, subject_digest, "?artifactType=application/vnd.example.none")
    assert nothing.status == 200 and nothing.json()["manifests"] == []
    # the referrer is a manifest like any other
    got = reg.request("GET", f"/v2/{name}/manifests/{sha256(signature)}", headers={"Accept": OCI_MANIFEST})
    assert got.status == 200 and got.body == signature
    # pushing it again (by tag this time) lists it once
    _put(reg, name, "sig", signature)
    assert len(_referrers(reg, name, subject_digest).json()["manifests"]) == 4


def test_referrers_of_unknown_subjects_and_other_repositories(target: tuple[str, Registry]) -> None:
    kind, reg = target
    if not has_referrers(kind):
        pytest.skip(NO_REFERRERS)
    subject, subject_digest = _image(reg, "oci11/scoped", "scoped")
    _put(reg, "oci11/scoped", "v1", subject)
    assert reg.upload("oci11/scoped", EMPTY, sha256(EMPTY)).status == 201
    _put(reg, "oci11/scoped", sha256(_artifact(subject, "x", SIGNATURE)), _artifact(subject, "x", SIGNATURE))
    # spec: a subject with no referrers (or never pushed) is an empty index, not a 404
    for repo, digest in (("oci11/scoped", sha256(b"never pushed")), ("oci11/elsewhere", subject_digest),
                         ("oci11/scoped", sha512(b"never pushed"))):
        reply = _referrers(reg, repo, digest)
        assert reply.status == 200, (repo, reply.body)
        assert reply.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    for bad in ("sha256:xyz", "nonsense", "md5:" + "0" * 32, "sha512:" + "0" * 64):
        reply = _referrers(reg, "oci11/scoped", bad)
        assert reply.status == 400 and reply.error_codes() == ["DIGEST_INVALID"], bad
    bad_name = _referrers(reg, "Bad/Name", subject_digest)
    assert bad_name.status == 400 and bad_name.error_codes() == ["NAME_INVALID"]


def test_subject_not_pushed_yet(target: tuple[str, Registry]) -> None:
    """Spec: a manifest whose subject does not exist yet is accepted, with ``OCI-Subject``."""
    kind, reg = target
    name = "oci11/early"
    future, future_digest = _image(reg, name, "future")  # blobs pushed, the manifest not yet
    assert reg.upload(name, EMPTY, sha256(EMPTY)).status == 201
    early = _artifact(future, "early", SIGNATURE)
    put = _put(reg, name, sha256(early), early)
    assert reg.request("GET", f"/v2/{name}/manifests/{future_digest}").status == 404
    if not has_referrers(kind):
        assert put.header("OCI-Subject") is None
        pytest.skip(NO_REFERRERS)
    assert put.header("OCI-Subject") == future_digest
    listed = _referrers(reg, name, future_digest).json()["manifests"]
    assert [d["digest"] for d in listed] == [sha256(early)]
    _put(reg, name, "v1", future)
    assert [d["digest"] for d in _referrers(reg, name, future_digest).json()["manifests"]] == [sha256(early)]


def test_manifest_without_subject_has_no_oci_subject_header(target: tuple[str, Registry]) -> None:
    _, reg = target
    manifest, _ = _image(reg, "oci11/plain", "plain")
    put = _put(reg, "oci11/plain", "v1", manifest)
    assert put.header("OCI-Subject") is None


# -- sha512 ----------------------------------------------------------------------------------


def test_sha512_blob_monolithic_and_chunked(target: tuple[str, Registry]) -> None:
    kind, reg = target
    name = "oci11/sha512"
    mono = b"a monolithic sha512 blob"
    post = reg.request("POST", f"/v2/{name}/blobs/uploads/?digest={sha512(mono)}", mono,
                       {"Content-Type": "application/octet-stream"})
    if kind == "docker-registry":
        assert post.status == 202  # the reference opens a session instead (single POST is optional)
    else:
        assert post.status == 201, post.body
        assert post.header("Docker-Content-Digest") == sha512(mono)
        assert post.header("Location").endswith(f"/v2/{name}/blobs/{sha512(mono)}")
    # the reference stores every blob under its canonical sha256 and names that one
    named = sha256 if kind == "docker-registry" else sha512
    put = reg.upload(name, mono, sha512(mono))  # POST, then PUT ?digest= with the body
    assert put.status == 201 and put.header("Docker-Content-Digest") == named(mono)

    data = bytes(range(256)) * 40
    start = reg.request("POST", f"/v2/{name}/blobs/uploads/")
    first = reg.request("PATCH", start.header("Location"), data[:4000], {"Content-Range": "0-3999"})
    assert first.status == 202
    location = first.header("Location")
    second = reg.request("PATCH", location, data[4000:], {"Content-Range": f"4000-{len(data) - 1}"})
    assert second.status == 202
    location = second.header("Location")
    sep = "&" if "?" in location else "?"
    done = reg.request("PUT", f"{location}{sep}digest={sha512(data)}")
    assert done.status == 201, done.body
    assert done.header("Docker-Content-Digest") == named(data)

    for blob in (mono, data):
        got = reg.request("GET", f"/v2/{name}/blobs/{sha512(blob)}")
        assert got.status == 200 and got.body == blob
        assert got.header("Docker-Content-Digest") == named(blob)
        head = reg.request("HEAD", f"/v2/{name}/blobs/{sha512(blob)}")
        assert head.status == 200 and head.header("Content-Length") == str(len(blob))
    ranged = reg.request("GET", f"/v2/{name}/blobs/{sha512(data)}", headers={"Range": "bytes=10-19"})
    assert ranged.status == 206 and ranged.body == data[10:20]
    if kind != "docker-registry":
        # kraken keeps a blob under the digest it was pushed with: its sha256 is not known yet
        assert reg.request("HEAD", f"/v2/{name}/blobs/{sha256(data)}").status == 404


def test_sha512_wrong_content_and_bad_digests(target: tuple[str, Registry]) -> None:
    kind, reg = target
    name = "oci11/sha512bad"
    wrong = reg.upload(name, b"actual", sha512(b"other"))
    assert wrong.status == 400 and wrong.error_codes() == ["DIGEST_INVALID"]
    assert reg.request("HEAD", f"/v2/{name}/blobs/{sha512(b'other')}").status == 404
    for bad in ("sha512:" + "0" * 64, "sha512:" + "A" * 128, "sha384:" + "0" * 96, "sha999:abc"):
        start = reg.request("POST", f"/v2/{name}/blobs/uploads/")
        location = start.header("Location")
        sep = "&" if "?" in location else "?"
        reply = reg.request("PUT", f"{location}{sep}digest={bad}", b"data")
        if kind == "docker-registry":
            assert reply.status != 201, bad  # the reference refuses them too, not always with 400
            continue
        assert reply.status == 400 and reply.error_codes() == ["DIGEST_INVALID"], (bad, reply.body)
        blob = reg.request("GET", f"/v2/{name}/blobs/{bad}")
        assert blob.status == 400 and blob.error_codes() == ["DIGEST_INVALID"], bad
        manifest = reg.request("GET", f"/v2/{name}/manifests/{bad}")
        assert manifest.status == 400 and manifest.error_codes() == ["DIGEST_INVALID"], bad


def test_sha512_cross_repository_mount(target: tuple[str, Registry]) -> None:
    kind, reg = target
    data = b"mount me by sha512"
    assert reg.upload("oci11/mount-src", data, sha512(data)).status == 201
    query = f"mount={sha512(data)}&from=oci11/mount-src"
    mounted = reg.request("POST", f"/v2/oci11/mount-dst/blobs/uploads/?{query}")
    assert mounted.status == 201, mounted.body
    assert mounted.header("Location").endswith(f"/v2/oci11/mount-dst/blobs/{sha512(data)}")
    if kind == "docker-registry":
        # the reference answers 201 but then serves the blob in the new repository under
        # neither digest (its sha512 mount links nothing): a defect kraken does not share
        for digest in (sha512(data), sha256(data)):
            assert reg.request("GET", f"/v2/oci11/mount-dst/blobs/{digest}").status == 404
        return
    assert reg.request("GET", f"/v2/oci11/mount-dst/blobs/{sha512(data)}").body == data


def test_manifest_by_sha512_digest(target: tuple[str, Registry]) -> None:
    kind, reg = target
    name = "oci11/sha512manifest"
    manifest, digest = _image(reg, name, "by-sha512", digest=sha512)
    put = reg.put_manifest(name, digest, manifest, OCI_MANIFEST)
    if kind == "docker-registry":
        # the reference compares a manifest reference with the body's sha256 whatever its algorithm
        assert put.status == 400 and put.error_codes() == ["DIGEST_INVALID"]
        pytest.skip("docker-registry 2.8 refuses manifests pushed by a sha512 reference (DIGEST_INVALID)")
    assert put.status == 201, put.body
    assert put.header("Docker-Content-Digest") == digest
    assert put.header("Location").endswith(f"/v2/{name}/manifests/{digest}")
    got = reg.request("GET", f"/v2/{name}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
    assert got.status == 200 and got.body == manifest
    assert got.header("Docker-Content-Digest") == digest
    head = reg.request("HEAD", f"/v2/{name}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
    assert head.status == 200 and head.header("Content-Length") == str(len(manifest))
    mismatch = reg.put_manifest(name, sha512(b"something else"), manifest, OCI_MANIFEST)
    assert mismatch.status == 400 and mismatch.error_codes()[0] in ("DIGEST_INVALID", "MANIFEST_INVALID")
    # by tag: the canonical sha256 digest, and the sha512-referenced blobs resolve
    tagged = _put(reg, name, "v1", manifest)
    assert tagged.header("Docker-Content-Digest") == sha256(manifest)


# -- through the agent (P2P) -----------------------------------------------------------------


def test_agent_serves_referrers_and_sha512_through_p2p(servers: Any, pki: Path, tmp_path: Path) -> None:
    """Push to the proxy; the agent's registry port answers referrers from the build-index and
    pulls a sha512 blob and a manifest pushed by its sha512 digest from the swarm."""
    origin = servers.start("kraken-origin", origin_config(pki, tmp_path / "o"), name="origin")
    tracker = servers.start("kraken-tracker", tracker_config(pki, origin.port("http")), name="tracker")
    index = servers.start("kraken-build-index", build_index_config(pki, tmp_path / "bi", origin.port("http")),
                          name="build-index")
    proxy = servers.start("kraken-proxy", proxy_config(pki, tmp_path / "p", origin.port("http"),
                                                       index.port("http")), name="proxy")
    config = agent_config(pki, tmp_path / "a", tracker.port("http"))
    config["registry"] = {"listen": ["tcp:0:interface=127.0.0.1"],
                          "build_index": f"127.0.0.1:{index.port('http')}"}
    agent = servers.start("kraken-agent", config, name="agent")
    push = Registry("127.0.0.1", proxy.port("registry"))
    pull = Registry("127.0.0.1", agent.port("registry"))
    name = "oci11/p2p"

    subject, subject_digest = _image(push, name, "p2p-subject")
    _put(push, name, "v1", subject)
    assert push.upload(name, EMPTY, sha256(EMPTY)).status == 201
    signature = _artifact(subject, "p2p-sig", SIGNATURE)
    assert _put(push, name, sha256(signature), signature).header("OCI-Subject") == subject_digest
    sbom = _artifact(subject, "p2p-sbom", config_type=SBOM)
    _put(push, name, sha256(sbom), sbom)

    listed = _referrers(pull, name, subject_digest)
    assert listed.status == 200 and listed.header("Content-Type") == OCI_INDEX
    assert sorted((d["digest"], d["artifactType"]) for d in listed.json()["manifests"]) == sorted(
        [(sha256(signature), SIGNATURE), (sha256(sbom), SBOM)])
    filtered = _referrers(pull, name, subject_digest, f"?artifactType={SBOM}")
    assert filtered.header("OCI-Filters-Applied") == "artifactType"
    assert [d["digest"] for d in filtered.json()["manifests"]] == [sha256(sbom)]
    assert _referrers(pull, name, sha256(b"nobody refers to me")).json()["manifests"] == []
    got = pull.request("GET", f"/v2/{name}/manifests/{sha256(signature)}", headers={"Accept": OCI_MANIFEST})
    assert got.status == 200 and got.body == signature

    # sha512: blobs, and a manifest pushed by its sha512 digest, pulled over P2P
    data = bytes(range(256)) * 9000  # ~2.3 MB: three 1 MiB pieces on the origin
    assert push.upload(name, data, sha512(data)).status == 201
    manifest, manifest_digest = _image(push, name, "p2p-sha512", digest=sha512)
    tagged = _put(push, name, f"{manifest_digest}?tag=v512", manifest)
    assert tagged.header("Docker-Content-Digest") == manifest_digest and tagged.header("OCI-Tag") == "v512"
    blob = pull.request("GET", f"/v2/{name}/blobs/{sha512(data)}")
    assert blob.status == 200 and blob.body == data
    assert blob.header("Docker-Content-Digest") == sha512(data)
    ranged = pull.request("GET", f"/v2/{name}/blobs/{sha512(data)}",
                          headers={"Range": "bytes=1048570-1048585"})
    assert ranged.status == 206 and ranged.body == data[1048570:1048586]
    for ref in (manifest_digest, "v512"):  # the tag went through the build-index's dependency check
        pulled = pull.request("GET", f"/v2/{name}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert pulled.status == 200 and pulled.body == manifest
        assert pulled.header("Docker-Content-Digest") == manifest_digest
    for layer in json.loads(manifest)["layers"]:
        assert pull.request("HEAD", f"/v2/{name}/blobs/{layer['digest']}").status == 200
    bad = pull.request("GET", f"/v2/{name}/blobs/sha512:{'0' * 64}")
    assert bad.status == 400 and bad.error_codes() == ["DIGEST_INVALID"]
    unknown = pull.request("GET", f"/v2/{name}/blobs/{sha512(b'never pushed')}")
    assert unknown.status == 404 and unknown.error_codes() == ["BLOB_UNKNOWN"]


def test_tag_parameters_on_a_push_by_digest(target: tuple[str, Registry]) -> None:
    """Spec (push by digest): ``?tag=`` parameters tag the manifest too, each named in ``OCI-Tag``;
    the only way to tag a manifest kept under a sha512 digest."""
    kind, reg = target
    name = "oci11/tagparam"
    manifest, digest = _image(reg, name, "tag-param", digest=sha512)
    put = reg.request("PUT", f"/v2/{name}/manifests/{digest}?tag=1.2.3&tag=latest&tag=1.2.3", manifest,
                      {"Content-Type": OCI_MANIFEST})
    if kind == "docker-registry":
        assert put.status == 400  # it refuses the sha512 reference (see test_manifest_by_sha512_digest)
        plain, plain_digest = _image(reg, name, "tag-param-256")
        put = reg.request("PUT", f"/v2/{name}/manifests/{plain_digest}?tag=t1", plain,
                          {"Content-Type": OCI_MANIFEST})
        assert put.status == 201 and put.header("OCI-Tag") is None
        assert reg.request("GET", f"/v2/{name}/manifests/t1").status == 404
        pytest.skip("docker-registry 2.8 ignores tag parameters")
    assert put.status == 201, put.body
    assert put.header("OCI-Tag") == "1.2.3, latest"
    for tag in ("1.2.3", "latest"):
        got = reg.request("GET", f"/v2/{name}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
        assert got.status == 200 and got.body == manifest
        assert got.header("Docker-Content-Digest") == digest
    assert reg.request("GET", f"/v2/{name}/tags/list").json()["tags"] == ["1.2.3", "latest"]
    oci = {"Content-Type": OCI_MANIFEST}
    bad = reg.request("PUT", f"/v2/{name}/manifests/{digest}?tag=-bad-", manifest, oci)
    assert bad.status == 400 and bad.error_codes() == ["MANIFEST_INVALID"]
    many = "&".join(f"tag=t{i}" for i in range(101))
    too_many = reg.request("PUT", f"/v2/{name}/manifests/{digest}?{many}", manifest, oci)
    assert too_many.status == 414
    assert reg.request("GET", f"/v2/{name}/tags/list").json()["tags"] == ["1.2.3", "latest"]


def test_oras_pushes_an_artifact_with_a_subject(target: tuple[str, Registry], tmp_path: Path) -> None:
    """A real client (the ORAS Python SDK) attaches an artifact to an image: its manifest carries
    the ``subject``, and the referrers API lists it with the config's media type."""
    kind, reg = target
    name = "oci11/oras"
    subject, subject_digest = _image(reg, name, "oras-subject")
    _put(reg, name, "v1", subject)
    sbom = tmp_path / "sbom.json"
    sbom.write_text('{"packages": []}')
    config = tmp_path / "config.json"
    config.write_text("{}")
    client = oras.client.OrasClient(hostname=f"{reg.host}:{reg.port}", insecure=True)
    pushed = client.push(
        target=f"{reg.host}:{reg.port}/{name}:sbom", files=[str(sbom)], disable_path_validation=True,
        manifest_config=f"{config}:{SBOM}", manifest_annotations={"org.example.tool": "oras"},
        subject=oras.oci.Subject(mediaType=OCI_MANIFEST, digest=subject_digest, size=len(subject)),
    )
    assert pushed.status_code == 201
    artifact_digest = pushed.headers["Docker-Content-Digest"]
    if not has_referrers(kind):
        assert "OCI-Subject" not in pushed.headers
        pytest.skip(NO_REFERRERS)
    assert pushed.headers["OCI-Subject"] == subject_digest
    listed = _referrers(reg, name, subject_digest).json()["manifests"]
    assert len(listed) == 1 and listed[0]["digest"] == artifact_digest
    assert listed[0]["artifactType"] == SBOM and listed[0]["annotations"]["org.example.tool"] == "oras"
    manifest = reg.request("GET", f"/v2/{name}/manifests/{artifact_digest}", headers={"Accept": OCI_MANIFEST})
    assert manifest.status == 200 and listed[0]["size"] == len(manifest.body)


# -- the build-index cluster -----------------------------------------------------------------


def _index_call(pki: Path, port: int, method: str, path: str, body: bytes | None = None,
                role: str = "proxy") -> tuple[int, Any]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=TLSClient(pki, port, role).context,
                                       timeout=30)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def test_build_index_copies_referrers_to_neighbours(servers: Any, pki: Path, tmp_path: Path) -> None:
    """A referrer recorded on one build-index of a cluster reaches the others, and so does its
    removal; only build-indexes may send copies."""
    ports = free_ports(2)
    for i, port in enumerate(ports):
        servers.start("kraken-build-index", {
            "listen": [f"tls:tcp:{port}:interface=127.0.0.1"],
            "tls": tls_section(pki, "build-index"),
            "buildindex": {"storage": str(tmp_path / f"bi{i}"), "cluster": [f"127.0.0.1:{ports[1 - i]}"]},
        }, name=f"build-index-{i}")
    subject = sha256(b"subject")
    entry = {"mediaType": OCI_MANIFEST, "digest": sha256(b"referrer"), "size": 8, "artifactType": SBOM}
    path = f"/referrers/test%2Fcopies/subjects/{subject}"

    def listed(port: int) -> list[str]:
        status, body = _index_call(pki, port, "GET", path, role="agent")
        assert status == 200, body
        return [e["digest"] for e in body["referrers"]]

    def wait_for(port: int, expected: list[str]) -> None:
        deadline = time.monotonic() + 10
        while listed(port) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listed(port) == expected

    assert _index_call(pki, ports[0], "PUT", path, json.dumps(entry).encode())[0] == 200
    wait_for(ports[1], [entry["digest"]])
    status, _ = _index_call(pki, ports[1], "DELETE", f"{path}/manifests/{entry['digest']}")
    assert status == 200
    wait_for(ports[0], [])
    # a copy is applied, not passed on; only build-indexes may send one
    copy = f"/internal/duplicate{path}"
    assert _index_call(pki, ports[0], "PUT", copy, json.dumps(entry).encode())[0] == 403
    status, _ = _index_call(pki, ports[0], "PUT", copy, json.dumps(entry).encode(), role="build-index")
    assert status == 200 and listed(ports[0]) == [entry["digest"]]
    time.sleep(1)
    assert listed(ports[1]) == []
