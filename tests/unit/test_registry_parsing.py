"""Sans-IO parts of the registry: names, digests, paths, ranges, manifests, Accept negotiation."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kraken.registry import manifests as mf
from kraken.registry.errors import RegistryError
from kraken.registry.names import check_name, is_tag, parse_digest
from kraken.registry.paths import Route, parse_v2_path
from kraken.registry.ranges import parse_chunk_range, parse_get_range, progress_header

HEX = "a" * 64
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@pytest.mark.parametrize("name", ["alpine", "test/alpine", "a/b/c", "my-repo_x.y", "a__b", "a--b"])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "Alpine", "a//b", "/a", "a/", "-a", "a-", "_a", "a/_tags", "a" * 256,
                                  "a b", "a/../b"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(RegistryError) as e:
        check_name(name)
    assert e.value.code == "NAME_INVALID" and e.value.status == 400


def test_tags() -> None:
    assert is_tag("v1") and is_tag("latest") and is_tag("_x") and is_tag("A" * 128)
    assert not is_tag("-v1") and not is_tag(".v1") and not is_tag("A" * 129) and not is_tag("a:b")


@pytest.mark.parametrize("text,why", [
    (None, "missing"), ("", "missing"), ("nonsense", "format"), ("sha256:xyz", "64"),
    ("sha256:" + "A" * 64, "64"), ("md5:" + "0" * 32, "unsupported"), ("sha256:" + "a" * 63, "64"),
])
def test_invalid_digests(text: str | None, why: str) -> None:
    with pytest.raises(RegistryError) as e:
        parse_digest(text)
    assert e.value.code == "DIGEST_INVALID" and e.value.status == 400 and why in e.value.message


def test_valid_digest() -> None:
    assert str(parse_digest(f"sha256:{HEX}")) == f"sha256:{HEX}"


@pytest.mark.parametrize("path,route", [
    ("/v2/", Route("base")),
    ("/v2", Route("base")),
    ("/v2/_catalog", Route("catalog")),
    ("/v2/test/alpine/tags/list", Route("tags", "test/alpine")),
    ("/v2/test/alpine/manifests/v1", Route("manifest", "test/alpine", "v1")),
    (f"/v2/a/b/c/blobs/sha256:{HEX}", Route("blob", "a/b/c", f"sha256:{HEX}")),
    ("/v2/a/blobs/uploads/", Route("uploads", "a")),
    ("/v2/a/blobs/uploads", Route("uploads", "a")),
    ("/v2/a/blobs/uploads/abc", Route("upload", "a", "abc")),
    ("/v2/manifests/manifests/x", Route("manifest", "manifests", "x")),
    ("/v1/x", None),
    ("/v2/x/unknown", None),
])
def test_paths(path: str, route: Route | None) -> None:
    assert parse_v2_path(path) == route


def test_progress_header() -> None:
    assert progress_header(0) == "0-0"
    assert progress_header(1) == "0-0"
    assert progress_header(1000) == "0-999"


def test_chunk_ranges() -> None:
    assert parse_chunk_range(None, 0, 10) == 10
    assert parse_chunk_range(None, 5, None) is None
    assert parse_chunk_range("0-9", 0, 10) == 10
    assert parse_chunk_range("bytes 10-19/*", 10, None) == 10
    for header, offset, length in [("10-19", 0, 10), ("0-9", 0, 5), ("9-0", 0, None), ("x", 0, 1), ("", 0, 0),
                                   ("-5", 0, 5), ("1-2-3", 0, 1)]:
        with pytest.raises(RegistryError) as e:
            parse_chunk_range(header, offset, length)
        assert e.value.status == 416
        assert e.value.headers["Range"] == progress_header(offset)


def test_get_ranges() -> None:
    assert parse_get_range(None, 100) is None
    assert parse_get_range("bytes=0-9,20-29", 100) is None
    assert parse_get_range("bytes=0-9", 100) == (0, 10)
    assert parse_get_range("bytes=90-", 100) == (90, 10)
    assert parse_get_range("bytes=90-1000", 100) == (90, 10)
    assert parse_get_range("bytes=-10", 100) == (90, 10)
    assert parse_get_range("bytes=-1000", 100) == (0, 100)
    assert parse_get_range("bytes=-" + "9" * 40, 100) == (0, 100)  # RFC 9110 14.1.2: all of it
    assert parse_get_range("bytes=10-" + "9" * 40, 100) == (10, 90)
    assert parse_get_range("bytes=-5", 0) is None
    # unparseable or another unit: ignored, the whole blob is sent (RFC 9110 14.2)
    unparseable = ("items=0-1", "bytes=x-y", "bytes=-", "bytes=--5", "bytes=\u0663-", "",
                   "bytes=0-" + "1" * 2000)
    for ignored in unparseable:
        assert parse_get_range(ignored, 100) is None, ignored
    for header in ("bytes=100-", "bytes=5-2", "bytes=-0", "bytes=" + "9" * 40 + "-"):
        with pytest.raises(RegistryError) as e:
            parse_get_range(header, 100)
        assert e.value.status == 416 and e.value.headers["Content-Range"] == "bytes */100"


@given(st.text(max_size=60), st.integers(0, 2**40), st.one_of(st.none(), st.integers(0, 2**40)))
def test_chunk_range_never_crashes(header: str, offset: int, length: int | None) -> None:
    try:
        size = parse_chunk_range(header, offset, length)
    except RegistryError as e:
        assert e.status == 416
    else:
        assert size is None or size >= 1


@given(st.text(max_size=60), st.integers(0, 2**40))
def test_get_range_never_crashes(header: str, size: int) -> None:
    try:
        got = parse_get_range(header, size)
    except RegistryError as e:
        assert e.status == 416
    else:
        if got is not None:
            start, length = got
            assert 0 <= start and length >= 1 and start + length <= size


def _manifest(**extra: object) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": mf.OCI_MANIFEST,
        "config": {"mediaType": CONFIG, "digest": f"sha256:{HEX}", "size": 2},
        "layers": [
            {"mediaType": LAYER, "digest": f"sha256:{'b' * 64}", "size": 3},
            {"mediaType": mf.FOREIGN_LAYERS[0], "digest": f"sha256:{'c' * 64}", "size": 3},
        ],
        **extra,
    }
    return json.dumps(doc).encode()


def test_manifest_references() -> None:
    m = mf.parse_manifest(_manifest(), mf.OCI_MANIFEST)
    assert m.media_type == mf.OCI_MANIFEST and not m.is_list
    assert m.blobs == (f"sha256:{HEX}", f"sha256:{'b' * 64}")  # the foreign layer is not required


def test_manifest_type_inferred_and_checked() -> None:
    doc = json.loads(_manifest())
    del doc["mediaType"]
    body = json.dumps(doc).encode()
    assert mf.parse_manifest(body).media_type == mf.OCI_MANIFEST
    assert mf.parse_manifest(body, mf.DOCKER_MANIFEST).media_type == mf.DOCKER_MANIFEST
    with pytest.raises(RegistryError) as e:
        mf.parse_manifest(_manifest(), mf.DOCKER_MANIFEST)
    assert e.value.code == "MANIFEST_INVALID"


def test_index() -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [
        {"mediaType": mf.OCI_MANIFEST, "digest": f"sha256:{HEX}", "size": 1,
         "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": mf.OCI_MANIFEST, "digest": f"sha256:{'d' * 64}", "size": 1,
         "platform": {"os": "linux", "architecture": "amd64"}},
    ]}).encode()
    m = mf.parse_manifest(body)
    assert m.is_list and m.children == (f"sha256:{HEX}", f"sha256:{'d' * 64}")
    assert mf.pick_platform(m) == f"sha256:{'d' * 64}"


@pytest.mark.parametrize("body", [
    b"", b"{", b"[]", b"null", json.dumps({"schemaVersion": 1}).encode(),
    json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "layers": []}).encode(),
    json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "config": {"digest": "sha256:x"},
                "layers": []}).encode(),
    json.dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [{"size": 1}]}).encode(),
    json.dumps({"schemaVersion": 2, "mediaType": "text/plain"}).encode(),
    _manifest(schemaVersion=3),
])
def test_bad_manifests(body: bytes) -> None:
    with pytest.raises(RegistryError) as e:
        mf.parse_manifest(body)
    assert e.value.code in ("MANIFEST_INVALID",) and e.value.status in (400, 415)


def test_oversized_manifest() -> None:
    with pytest.raises(RegistryError) as e:
        mf.parse_manifest(b" " * (mf.MAX_MANIFEST_SIZE + 1))
    assert e.value.status == 413


@given(st.binary(max_size=300))
def test_manifest_parser_never_crashes(body: bytes) -> None:
    try:
        mf.parse_manifest(body)
    except RegistryError:
        pass


def test_accept() -> None:
    accepted = mf.parse_accept([f"{mf.DOCKER_MANIFEST}, {mf.OCI_MANIFEST};q=0.5", f"{mf.OCI_INDEX};q=0"])
    assert accepted == [mf.DOCKER_MANIFEST, mf.OCI_MANIFEST]
    assert mf.accepts(accepted, mf.OCI_MANIFEST) and not mf.accepts(accepted, mf.OCI_INDEX)
    assert mf.accepts([], mf.OCI_INDEX)
    assert mf.accepts(["*/*"], mf.OCI_INDEX) and mf.accepts(["application/*"], mf.OCI_INDEX)


def test_error_envelope() -> None:
    e = RegistryError("BLOB_UNKNOWN", "blob unknown to registry", detail={"digest": "x"})
    assert e.status == 404
    assert json.loads(e.body()) == {"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown to registry",
                                                "detail": {"digest": "x"}}]}
