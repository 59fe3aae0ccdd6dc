"""The preheat and prefetch parsers (notification envelopes, prefetch tags, manifests), sans-IO."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kraken.core.http import HTTPError
from kraken.mirror.preheat import PushEvent, push_events, split_prefetch_tag
from kraken.mirror.warm import Blob, NotAManifest, manifest_refs

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64
SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"


def test_docker_registry_and_harbor_envelopes() -> None:
    registry = {"events": [
        {"action": "push", "target": {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": D1,
                                      "repository": "test/app", "tag": "v1",
                                      "url": "http://reg.local:5000/v2/test/app/manifests/" + D1}},
        {"action": "push", "target": {"mediaType": "application/octet-stream", "digest": D2,
                                      "repository": "test/app"}},
        {"action": "pull", "target": {"mediaType": SCHEMA2, "digest": D2, "repository": "test/app"}},
        {"action": "push", "target": {"mediaType": SCHEMA2, "digest": "md5:x", "repository": "test/app"}},
    ]}
    assert push_events(registry) == [PushEvent("test/app", D1, "v1", "reg.local:5000")]
    target = {"MediaType": SCHEMA2, "Digest": D2, "Repository": "library/app", "Url": "https://harbor.local",
              "Tag": "v2"}
    harbor = {"Events": [{"Id": "x", "Action": "push", "Target": target, "Request": None, "Actor": None}]}
    assert push_events(harbor) == [PushEvent("library/app", D2, "v2", "harbor.local")]
    with pytest.raises(HTTPError) as caught:
        push_events({"nothing": 1})
    assert caught.value.status == 400
    with pytest.raises(HTTPError) as caught:
        push_events({"events": [{}] * 1001})
    assert caught.value.status == 413


def test_prefetch_tags() -> None:
    assert split_prefetch_tag("127.0.0.1:5055/uber-usi/abacus-go:v1") == (
        "127.0.0.1:5055", "uber-usi/abacus-go", "v1")
    assert split_prefetch_tag("docker.io/library/alpine:3.20") == ("docker.io", "library/alpine", "3.20")
    for bad in [None, "", "alpine:3", "host/alpine", "host/Bad Name:v1", "host/a:b/c", 7]:
        with pytest.raises(HTTPError) as caught:
            split_prefetch_tag(bad)
        assert caught.value.status == 400


def test_manifest_refs() -> None:
    image = {"schemaVersion": 2, "config": {"digest": D1, "size": 10}, "layers": [{"digest": D2, "size": 20}]}
    assert manifest_refs(json.dumps(image).encode()).blobs == (Blob(D1, 10), Blob(D2, 20))
    index = {"schemaVersion": 2, "manifests": [{"digest": D1, "size": 5, "platform": {}}]}
    refs = manifest_refs(json.dumps(index).encode())
    assert refs.children == (Blob(D1, 5),) and refs.blobs == ()
    for bad in [b"[]", b"{", b'{"layers": [{"digest": "x", "size": 1}]}',
                b'{"config": {"digest": "%s"}}' % D1.encode(),
                b'{"layers": [{"digest": "%s", "size": -1}]}' % D1.encode(), b"{}"]:
        with pytest.raises(NotAManifest):
            manifest_refs(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_envelopes_never_crash(value: Any) -> None:
    try:
        push_events(value)
    except HTTPError as e:
        assert e.status in (400, 413)


@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_manifests_never_crash(raw: bytes) -> None:
    try:
        manifest_refs(raw)
    except NotAManifest:
        pass
