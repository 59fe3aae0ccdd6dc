"""The OCI distribution-spec conformance workflows (pull, push, discovery, management) over HTTP.

Every workflow runs against a real ``kraken-proxy`` and, as the reference, Debian's
``docker-registry``. Where the reference breaks the spec (out-of-order chunks, invalid ranges,
invalid digest formats) the test pins down what each one answers.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import time
from collections.abc import Iterator

import pytest

from tests.integration.registry_http import Registry
from tests.integration.registry_support import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, DockerRegistry, sha256
from tests.support import ServerProcess

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MAX_BLOB = 4 * 1024 * 1024


@pytest.fixture(scope="module", params=["kraken", "docker-registry"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Registry]]:
    workdir = tmp_path_factory.mktemp(request.param)
    if request.param == "kraken":
        proc = ServerProcess("kraken-proxy", {
            "listen": ["tcp:0:interface=127.0.0.1"],
            "proxy": {"storage": str(workdir / "data"), "max_blob_size": MAX_BLOB},
        }, workdir, []).start()
        try:
            yield "kraken", Registry("127.0.0.1", proc.port("registry"))
        finally:
            proc.stop()
    else:
        ref = DockerRegistry(workdir)
        try:
            yield "docker-registry", Registry("127.0.0.1", ref.port)
        finally:
            ref.stop()


def _image(seed: str) -> tuple[bytes, bytes, bytes]:
    """(config, layer, manifest) distinct per *seed*."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = hashlib.sha256(seed.encode()).digest() * 64
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(layer), "size": len(layer)}],
    }).encode()
    return config, layer, manifest


def _push(reg: Registry, name: str, tag: str, seed: str) -> tuple[bytes, bytes, bytes]:
    config, layer, manifest = _image(seed)
    for blob in (config, layer):
        assert reg.upload(name, blob, sha256(blob)).status == 201
    put = reg.put_manifest(name, tag, manifest, OCI_MANIFEST)
    assert put.status == 201, put.body
    assert put.header("Docker-Content-Digest") == sha256(manifest)
    return config, layer, manifest


# -- pull ------------------------------------------------------------------------------------


def test_base_endpoint(target: tuple[str, Registry]) -> None:
    _, reg = target
    reply = reg.request("GET", "/v2/")
    assert reply.status == 200
    assert reply.header("Docker-Distribution-API-Version") == "registry/2.0"


def test_pull_manifest_and_blobs(target: tuple[str, Registry]) -> None:
    _, reg = target
    config, layer, manifest = _push(reg, "test/pull", "v1", "pull")
    for ref in ("v1", sha256(manifest)):
        got = reg.request("GET", f"/v2/test/pull/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert got.status == 200
        assert got.body == manifest
        assert got.header("Content-Type") == OCI_MANIFEST
        assert got.header("Docker-Content-Digest") == sha256(manifest)
        head = reg.request("HEAD", f"/v2/test/pull/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert head.status == 200 and head.body == b""
        assert head.header("Content-Length") == str(len(manifest))
    blob = reg.request("GET", f"/v2/test/pull/blobs/{sha256(layer)}")
    assert blob.status == 200 and blob.body == layer
    assert blob.header("Docker-Content-Digest") == sha256(layer)
    head = reg.request("HEAD", f"/v2/test/pull/blobs/{sha256(config)}")
    assert head.status == 200 and head.header("Content-Length") == str(len(config))


def test_pull_unknowns(target: tuple[str, Registry]) -> None:
    _, reg = target
    _push(reg, "test/unknown", "v1", "unknown")
    missing = reg.request("GET", "/v2/test/unknown/manifests/nope")
    assert missing.status == 404 and missing.error_codes() == ["MANIFEST_UNKNOWN"]
    missing = reg.request("GET", f"/v2/test/unknown/blobs/{sha256(b'never pushed')}")
    assert missing.status == 404 and missing.error_codes() == ["BLOB_UNKNOWN"]
    assert reg.request("HEAD", f"/v2/test/unknown/blobs/{sha256(b'never pushed')}").status == 404


def test_blob_ranges(target: tuple[str, Registry]) -> None:
    _, reg = target
    data = bytes(range(256)) * 4
    digest = sha256(data)
    assert reg.upload("test/ranges", data, digest).status == 201
    part = reg.request("GET", f"/v2/test/ranges/blobs/{digest}", headers={"Range": "bytes=10-19"})
    assert part.status == 206 and part.body == data[10:20]
    assert part.header("Content-Range") == f"bytes 10-19/{len(data)}"
    tail = reg.request("GET", f"/v2/test/ranges/blobs/{digest}", headers={"Range": "bytes=-5"})
    assert tail.status == 206 and tail.body == data[-5:]
    beyond = reg.request("GET", f"/v2/test/ranges/blobs/{digest}", headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status == 416


def test_invalid_names(target: tuple[str, Registry]) -> None:
    _, reg = target
    reply = reg.request("GET", "/v2/Upper/Case/manifests/v1")
    assert reply.status in (400, 404)
    if reply.status == 400:
        assert reply.error_codes() == ["NAME_INVALID"]


# -- push ------------------------------------------------------------------------------------


def test_push_monolithic_post(target: tuple[str, Registry]) -> None:
    kind, reg = target
    data = b"monolithic post body"
    reply = reg.request("POST", f"/v2/test/mono/blobs/uploads/?digest={sha256(data)}", data,
                        {"Content-Type": "application/octet-stream"})
    if kind == "docker-registry":
        assert reply.status == 202  # single-request POST is optional; the reference opens a session
        return
    assert reply.status == 201
    assert reply.header("Location").endswith(f"/v2/test/mono/blobs/{sha256(data)}")
    assert reg.request("GET", f"/v2/test/mono/blobs/{sha256(data)}").body == data


def test_push_chunked_with_status(target: tuple[str, Registry]) -> None:
    _, reg = target
    data = os.urandom(3000)
    start = reg.request("POST", "/v2/test/chunked/blobs/uploads/")
    assert start.status == 202
    location = start.header("Location")
    first = reg.request("PATCH", location, data[:1000],
                        {"Content-Range": "0-999", "Content-Type": "application/octet-stream"})
    assert first.status == 202 and first.header("Range") == "0-999"
    location = first.header("Location")
    status = reg.request("GET", location)
    assert status.status == 204 and status.header("Range") == "0-999"
    headers = {"Content-Range": f"1000-{len(data) - 1}", "Content-Type": "application/octet-stream"}
    second = reg.request("PATCH", location, data[1000:], headers)
    assert second.status == 202 and second.header("Range") == f"0-{len(data) - 1}"
    location = second.header("Location")
    sep = "&" if "?" in location else "?"
    done = reg.request("PUT", f"{location}{sep}digest={sha256(data)}")
    assert done.status == 201
    assert done.header("Docker-Content-Digest") == sha256(data)
    assert reg.request("GET", f"/v2/test/chunked/blobs/{sha256(data)}").body == data


def test_out_of_order_chunk_is_416(target: tuple[str, Registry]) -> None:
    kind, reg = target
    start = reg.request("POST", "/v2/test/order/blobs/uploads/")
    first = reg.request("PATCH", start.header("Location"), b"abcd", {"Content-Range": "0-3"})
    assert first.status == 202
    skipped = reg.request("PATCH", first.header("Location"), b"wxyz", {"Content-Range": "10-13"})
    if kind == "docker-registry":
        assert skipped.status == 202  # the reference accepts the gap (documented in TESTING.md)
        return
    assert skipped.status == 416
    assert skipped.header("Range") == "0-3"
    assert reg.request("GET", first.header("Location")).header("Range") == "0-3"


def test_invalid_content_range_is_416(target: tuple[str, Registry]) -> None:
    kind, reg = target
    start = reg.request("POST", "/v2/test/badrange/blobs/uploads/")
    reply = reg.request("PATCH", start.header("Location"), b"abcd", {"Content-Range": "bananas"})
    if kind == "docker-registry":
        assert reply.status != 416
        return
    assert reply.status == 416
    mismatch = reg.request("PATCH", start.header("Location"), b"abcd", {"Content-Range": "0-9"})
    assert mismatch.status == 416
    assert reg.request("GET", start.header("Location")).header("Range") == "0-0"


def test_invalid_digest_is_400(target: tuple[str, Registry]) -> None:
    kind, reg = target
    for bad in ("sha256:xyz", "nonsense", "md5:" + "0" * 32):
        start = reg.request("POST", "/v2/test/baddigest/blobs/uploads/")
        location = start.header("Location")
        sep = "&" if "?" in location else "?"
        reply = reg.request("PUT", f"{location}{sep}digest={bad}", b"data")
        if kind == "docker-registry":
            assert reply.status != 201
            continue
        assert reply.status == 400, (bad, reply.body)
        assert reply.error_codes() == ["DIGEST_INVALID"]


def test_wrong_digest_is_rejected(target: tuple[str, Registry]) -> None:
    _, reg = target
    reply = reg.upload("test/wrong", b"actual content", sha256(b"other content"))
    assert reply.status == 400 and reply.error_codes() == ["DIGEST_INVALID"]
    assert reg.request("HEAD", f"/v2/test/wrong/blobs/{sha256(b'other content')}").status == 404


def test_cross_repository_mount(target: tuple[str, Registry]) -> None:
    _, reg = target
    data = b"mount me"
    assert reg.upload("test/source", data, sha256(data)).status == 201
    mounted = reg.request("POST", f"/v2/test/dest/blobs/uploads/?mount={sha256(data)}&from=test/source")
    assert mounted.status == 201
    assert mounted.header("Location").endswith(f"/v2/test/dest/blobs/{sha256(data)}")
    assert reg.request("GET", f"/v2/test/dest/blobs/{sha256(data)}").body == data
    unknown = sha256(b"not there")
    fallback = reg.request("POST", f"/v2/test/dest/blobs/uploads/?mount={unknown}&from=test/source")
    assert fallback.status == 202 and fallback.header("Location")


def test_cancel_upload(target: tuple[str, Registry]) -> None:
    _, reg = target
    start = reg.request("POST", "/v2/test/cancel/blobs/uploads/")
    location = start.header("Location")
    assert reg.request("DELETE", location).status == 204
    gone = reg.request("GET", location)
    assert gone.status == 404 and gone.error_codes() == ["BLOB_UPLOAD_UNKNOWN"]


def test_manifest_with_unknown_blob_is_rejected(target: tuple[str, Registry]) -> None:
    _, reg = target
    config, _, _ = _image("dangling")
    assert reg.upload("test/dangling", config, sha256(config)).status == 201
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(b"missing layer"), "size": 13}],
    }).encode()
    reply = reg.put_manifest("test/dangling", "v1", manifest, OCI_MANIFEST)
    assert reply.status == 400 and reply.error_codes() == ["MANIFEST_BLOB_UNKNOWN"]


def test_manifest_digest_mismatch(target: tuple[str, Registry]) -> None:
    _, reg = target
    _, _, manifest = _push(reg, "test/mismatch", "v1", "mismatch")
    reply = reg.put_manifest("test/mismatch", sha256(b"something else"), manifest, OCI_MANIFEST)
    assert reply.status == 400 and reply.error_codes()[0] in ("DIGEST_INVALID", "MANIFEST_INVALID")


def test_index_and_accept_negotiation(target: tuple[str, Registry]) -> None:
    kind, reg = target
    _, _, manifest = _push(reg, "test/multi", "amd64", "multi")
    index = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest),
                       "platform": {"os": "linux", "architecture": "amd64"}}],
    }).encode()
    assert reg.put_manifest("test/multi", "latest", index, OCI_INDEX).status == 201
    accept = {"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"}
    got = reg.request("GET", "/v2/test/multi/manifests/latest", headers=accept)
    assert got.status == 200 and got.body == index and got.header("Content-Type") == OCI_INDEX
    only_image = reg.request("GET", "/v2/test/multi/manifests/latest", headers={"Accept": OCI_MANIFEST})
    if kind == "docker-registry":
        assert only_image.status == 404 and only_image.error_codes() == ["MANIFEST_UNKNOWN"]
        return
    # kraken serves the linux/amd64 image to a client that cannot take an index
    assert only_image.status == 200 and only_image.body == manifest
    assert only_image.header("Docker-Content-Digest") == sha256(manifest)


# -- content discovery -----------------------------------------------------------------------


def test_tags_list_pagination(target: tuple[str, Registry]) -> None:
    kind, reg = target
    tags = ["a1", "b2", "c3", "d4", "e5"]
    config, layer, manifest = _image("tags")
    for blob in (config, layer):
        assert reg.upload("test/tags", blob, sha256(blob)).status == 201
    for tag in tags:
        assert reg.put_manifest("test/tags", tag, manifest, OCI_MANIFEST).status == 201
    everything = reg.request("GET", "/v2/test/tags/tags/list").json()
    assert everything["name"] == "test/tags" and sorted(everything["tags"]) == tags
    if kind == "docker-registry":
        return  # the reference does not list tags in lexical order, so its pages differ
    assert everything["tags"] == tags
    page = reg.request("GET", "/v2/test/tags/tags/list?n=2")
    assert page.json()["tags"] == ["a1", "b2"]
    link = page.header("Link")
    assert link and 'rel="next"' in link
    next_path = link[link.index("<") + 1 : link.index(">")]
    assert reg.request("GET", next_path).json()["tags"] == ["c3", "d4"]
    assert reg.request("GET", "/v2/test/tags/tags/list?n=10&last=c3").json()["tags"] == ["d4", "e5"]
    unknown = reg.request("GET", "/v2/test/never/tags/list")
    assert unknown.status == 404 and unknown.error_codes() == ["NAME_UNKNOWN"]


def test_catalog_pagination(target: tuple[str, Registry]) -> None:
    _, reg = target
    _push(reg, "test/cat-a", "v1", "cat")
    _push(reg, "test/cat-b", "v1", "cat")
    full = reg.request("GET", "/v2/_catalog").json()["repositories"]
    assert {"test/cat-a", "test/cat-b"} <= set(full)
    assert full == sorted(full)
    first = reg.request("GET", "/v2/_catalog?n=1")
    assert len(first.json()["repositories"]) == 1 and 'rel="next"' in first.header("Link")


# -- content management ----------------------------------------------------------------------


def test_delete_manifest_by_digest(target: tuple[str, Registry]) -> None:
    _, reg = target
    _, layer, manifest = _push(reg, "test/delete", "v1", "delete")
    assert reg.put_manifest("test/delete", "v2", manifest, OCI_MANIFEST).status == 201
    _push(reg, "test/delete", "other", "delete-other")
    digest = sha256(manifest)
    reply = reg.request("DELETE", f"/v2/test/delete/manifests/{digest}")
    assert reply.status == 202, reply.body
    for ref in (digest, "v1", "v2"):
        gone = reg.request("GET", f"/v2/test/delete/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert gone.status == 404 and gone.error_codes() == ["MANIFEST_UNKNOWN"], ref
    # every tag on the manifest went with it; other tags stay, and so do the blobs
    assert reg.request("GET", "/v2/test/delete/tags/list").json()["tags"] == ["other"]
    assert reg.request("HEAD", f"/v2/test/delete/blobs/{sha256(layer)}").status == 200
    again = reg.request("DELETE", f"/v2/test/delete/manifests/{digest}")
    assert again.status == 404 and again.error_codes() == ["MANIFEST_UNKNOWN"]
    unknown = reg.request("DELETE", f"/v2/test/delete/manifests/{sha256(b'never pushed')}")
    assert unknown.status == 404 and unknown.error_codes() == ["MANIFEST_UNKNOWN"]


def test_delete_tag(target: tuple[str, Registry]) -> None:
    kind, reg = target
    _, _, manifest = _push(reg, "test/deltag", "v1", "deltag")
    assert reg.put_manifest("test/deltag", "v2", manifest, OCI_MANIFEST).status == 201
    reply = reg.request("DELETE", "/v2/test/deltag/manifests/v1")
    if kind == "docker-registry":
        # distribution 2.8 predates OCI 1.1's tag deletion: it reads the tag as a digest
        assert reply.status == 400 and reply.error_codes() == ["DIGEST_INVALID"]
        return
    assert reply.status == 202, reply.body
    gone = reg.request("GET", "/v2/test/deltag/manifests/v1")
    assert gone.status == 404 and gone.error_codes() == ["MANIFEST_UNKNOWN"]
    # the manifest and its other tags stay
    assert reg.request("GET", f"/v2/test/deltag/manifests/{sha256(manifest)}").body == manifest
    assert reg.request("GET", "/v2/test/deltag/manifests/v2").body == manifest
    assert reg.request("GET", "/v2/test/deltag/tags/list").json()["tags"] == ["v2"]
    again = reg.request("DELETE", "/v2/test/deltag/manifests/v1")
    assert again.status == 404 and again.error_codes() == ["MANIFEST_UNKNOWN"]
    # the last tag's removal removes the repository from the listings
    assert reg.request("DELETE", "/v2/test/deltag/manifests/v2").status == 202
    assert reg.request("GET", "/v2/test/deltag/tags/list").status == 404
    assert "test/deltag" not in reg.request("GET", "/v2/_catalog").json()["repositories"]


def test_delete_blob(target: tuple[str, Registry]) -> None:
    _, reg = target
    data = b"a blob to delete " * 100
    digest = sha256(data)
    assert reg.upload("test/delblob", data, digest).status == 201
    reply = reg.request("DELETE", f"/v2/test/delblob/blobs/{digest}")
    assert reply.status == 202, reply.body
    for method in ("GET", "HEAD"):
        assert reg.request(method, f"/v2/test/delblob/blobs/{digest}").status == 404
    gone = reg.request("GET", f"/v2/test/delblob/blobs/{digest}")
    assert gone.error_codes() == ["BLOB_UNKNOWN"]
    again = reg.request("DELETE", f"/v2/test/delblob/blobs/{digest}")
    assert again.status == 404 and again.error_codes() == ["BLOB_UNKNOWN"]
    bad = reg.request("DELETE", "/v2/test/delblob/blobs/sha256:zz")
    assert bad.status == 400 and bad.error_codes() == ["DIGEST_INVALID"]
    # the blob can be pushed again
    assert reg.upload("test/delblob", data, digest).status == 201
    assert reg.request("GET", f"/v2/test/delblob/blobs/{digest}").body == data


def test_read_only_proxy_refuses_writes(tmp_path_factory: pytest.TempPathFactory) -> None:
    workdir = tmp_path_factory.mktemp("read-only")
    proc = ServerProcess("kraken-proxy", {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "proxy": {"storage": str(workdir / "data"), "read_only": True},
    }, workdir, []).start()
    try:
        reg = Registry("127.0.0.1", proc.port("registry"))
        digest = sha256(b"x")
        writes = (("DELETE", f"/v2/test/ro/manifests/{digest}"), ("DELETE", "/v2/test/ro/manifests/v1"),
                  ("DELETE", f"/v2/test/ro/blobs/{digest}"), ("POST", "/v2/test/ro/blobs/uploads/"))
        for method, path in writes:
            reply = reg.request(method, path)
            assert reply.status == 405 and reply.error_codes() == ["UNSUPPORTED"], (method, path)
        assert reg.request("GET", "/v2/test/ro/manifests/v1").status == 404
    finally:
        proc.stop()


# -- limits (kraken only) --------------------------------------------------------------------


def test_oversized_blob_is_refused_and_session_kept(target: tuple[str, Registry]) -> None:
    kind, reg = target
    if kind != "kraken":
        pytest.skip("the size limit is kraken's configuration")
    start = reg.request("POST", "/v2/test/big/blobs/uploads/")
    location = start.header("Location")
    small = reg.request("PATCH", location, b"x" * 100, {"Content-Range": "0-99"})
    assert small.status == 202
    big = reg.request("PATCH", location, b"y" * MAX_BLOB, {"Content-Range": f"100-{MAX_BLOB + 99}"})
    assert big.status == 413 and big.error_codes() == ["SIZE_INVALID"]
    assert reg.request("GET", location).header("Range") == "0-99"


def test_bad_manifest_bodies(target: tuple[str, Registry]) -> None:
    kind, reg = target
    if kind != "kraken":
        pytest.skip("kraken's error details")
    for body in (b"not json", b"[]", json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST}).encode()):
        reply = reg.put_manifest("test/badmanifest", "v1", body, OCI_MANIFEST)
        assert reply.status == 400 and reply.error_codes() == ["MANIFEST_INVALID"], body
    wrong_type = reg.put_manifest("test/badmanifest", "v1", _image("x")[2], DOCKER_MANIFEST)
    assert wrong_type.status == 400
    bad_tag = reg.request("GET", "/v2/test/badmanifest/manifests/-bad-tag-")
    assert bad_tag.status == 400


def test_health_and_metrics(target: tuple[str, Registry]) -> None:
    kind, reg = target
    if kind != "kraken":
        pytest.skip("kraken endpoints")
    assert reg.request("GET", "/health").json() == {"status": "ok"}
    metrics = reg.request("GET", "/metrics").body.decode()
    assert "kraken_proxy_registry_requests_total" in metrics


def test_chunked_transfer_encoding_upload(target: tuple[str, Registry]) -> None:
    _, reg = target
    data = os.urandom(200_000)
    start = reg.request("POST", "/v2/test/te/blobs/uploads/")
    conn = http.client.HTTPConnection(reg.host, reg.port, timeout=30)
    try:
        pieces = iter([data[:70_000], data[70_000:]])
        conn.request("PATCH", start.header("Location"), body=pieces, encode_chunked=True,
                     headers={"Content-Type": "application/octet-stream"})
        response = conn.getresponse()
        response.read()
        assert response.status == 202
        location = response.headers["Location"]
    finally:
        conn.close()
    sep = "&" if "?" in location else "?"
    assert reg.request("PUT", f"{location}{sep}digest={sha256(data)}").status == 201
    assert reg.request("GET", f"/v2/test/te/blobs/{sha256(data)}").body == data


def test_lost_connection_mid_chunk_rolls_back(target: tuple[str, Registry]) -> None:
    kind, reg = target
    if kind != "kraken":
        pytest.skip("what is kept of a broken chunk is up to the registry")
    start = reg.request("POST", "/v2/test/lost/blobs/uploads/")
    location = start.header("Location")
    assert reg.request("PATCH", location, b"a" * 100, {"Content-Range": "0-99"}).status == 202
    with socket.create_connection((reg.host, reg.port)) as sock:
        sock.sendall(f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                     "Content-Range: 100-1099\r\n\r\n".encode() + b"b" * 500)
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while reg.request("GET", location).header("Range") != "0-99" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reg.request("GET", location).header("Range") == "0-99"
    rest = b"c" * 50
    assert reg.request("PATCH", location, rest, {"Content-Range": "100-149"}).status == 202
    sep = "&" if "?" in location else "?"
    done = reg.request("PUT", f"{location}{sep}digest={sha256(b'a' * 100 + rest)}")
    assert done.status == 201


def test_large_blob_full_and_ranged(target: tuple[str, Registry]) -> None:
    kind, reg = target
    data = os.urandom(3 * 1024 * 1024 + 5)
    assert reg.upload("test/large", data, sha256(data)).status == 201
    path = f"/v2/test/large/blobs/{sha256(data)}"
    for _ in range(2):
        full = reg.request("GET", path)
        assert full.status == 200 and full.body == data
    part = reg.request("GET", path, headers={"Range": "bytes=1048576-2621439"})
    assert part.status == 206 and part.body == data[1048576:2621440]
    # a client that goes away mid-body leaves the server able to serve the next one
    with socket.create_connection((reg.host, reg.port)) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sock.recv(65536)
    assert reg.request("GET", path).body == data
    if kind == "kraken":
        metrics = reg.request("GET", "/metrics").body.decode()
        name = "kraken_proxy_registry_sendfile_bodies_total"
        line = next(x for x in metrics.splitlines() if x.startswith(name))
        assert float(line.split()[-1]) >= 3
