"""Mirror config parsing and the build-index's mirror tag logic, on a Clock (sans-IO)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from kraken.backends.base import BackendError, BlobNotFound
from kraken.core.digest import Digest
from kraken.core.metrics import Metrics
from kraken.mirror.config import MirrorConfigError, mirrored_name, parse_mirrors
from kraken.mirror.tags import MirrorTags, UpstreamFailed, UpstreamIncomplete
from kraken.registry.errors import RegistryError
from kraken.registry.tagstore import TagStore


def _digest(data: bytes) -> str:
    return str(Digest.of_bytes(data))


class Upstream:
    """A registry as the registry backend sees it: tags and blobs by digest (manifests too)."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.blobs: dict[str, bytes] = {}
        self.down = False
        self.tag_reads = 0

    def add(self, data: bytes) -> str:
        digest = _digest(data)
        self.blobs[digest] = data
        return digest

    def image(self, *layers: bytes) -> str:
        config = self.add(b"{}")
        descriptors = [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": self.add(layer),
                        "size": len(layer)} for layer in layers]
        return self.add(json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": descriptors}).encode())

    # Backend
    def list(self, prefix: str) -> Deferred[Any]:
        repo, _, start = prefix.partition(":")
        return succeed(sorted(f"{repo}:{t}" for t in self.tags if t.startswith(start)))

    def download(self, namespace: str, name: str, dest: str) -> Deferred[Any]:
        is_tag = ":" in name and not name.startswith("sha256:")
        self.tag_reads += is_tag
        if self.down:
            return fail(BackendError("connection refused"))
        if is_tag:
            tag = name.rpartition(":")[2]
            if tag not in self.tags:
                return fail(BlobNotFound(name))
            Path(dest).write_text(self.tags[tag])
            return succeed(None)
        if name not in self.blobs:
            return fail(BlobNotFound(name))
        Path(dest).write_bytes(self.blobs[name])
        return succeed(None)

    def stat(self, namespace: str, name: str) -> Deferred[Any]:
        data = self.blobs.get(name if ":" in name else f"sha256:{name}")
        return succeed(len(data)) if data is not None else fail(BlobNotFound(name))


def _tags(tmp_path: Path, upstream: Upstream, clock: Clock, metrics: Metrics | None = None) -> MirrorTags:
    upstreams = parse_mirrors({"reg.example:5000": {"url": "https://reg.example:5000", "tag_ttl": 30}})
    backends: dict[str, Any] = {"reg.example-5000": upstream}
    return MirrorTags(upstreams, backends, TagStore(tmp_path / "tags"), tmp_path / "tmp", clock,
                      metrics=metrics)


def _count(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value("kraken_build_index_mirror_tag_lookups_total",
                                              {"outcome": outcome})
    return value or 0.0


def _result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the lookup did not finish"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


REPO = "reg.example-5000/team/app"


def test_tag_is_resolved_kept_for_its_ttl_then_checked_again(tmp_path: Path) -> None:
    upstream, clock = Upstream(), Clock()
    first = upstream.image(b"layer one")
    upstream.tags["v1"] = first
    tags = _tags(tmp_path, upstream, clock)
    assert tags.owns(REPO) and not tags.owns("team/app")
    assert _result(tags.get(REPO, "v1")) == first
    assert _result(tags.get(REPO, "v1")) == first and upstream.tag_reads == 1
    second = upstream.image(b"layer two")
    upstream.tags["v1"] = second
    clock.advance(31)
    assert _result(tags.get(REPO, "v1")) == second and upstream.tag_reads == 2
    assert _result(tags.get(REPO, "nope")) is None
    assert _result(tags.list_tags(f"{REPO}:")) == [f"{REPO}:v1"]


def test_kept_digest_is_served_while_the_upstream_is_down(tmp_path: Path) -> None:
    upstream, clock = Upstream(), Clock()
    upstream.tags["v1"] = digest = upstream.image(b"layer")
    metrics = Metrics("build-index")
    tags = _tags(tmp_path, upstream, clock, metrics)
    assert _result(tags.get(REPO, "v1")) == digest
    upstream.down = True
    clock.advance(60)
    reads = upstream.tag_reads
    assert _result(tags.get(REPO, "v1")) == digest
    assert _result(tags.get(REPO, "v1")) == digest and upstream.tag_reads == reads + 1  # once per ttl
    assert (_count(metrics, "upstream"), _count(metrics, "stale"), _count(metrics, "fresh")) == (1, 1, 1)
    with pytest.raises(UpstreamFailed, match="connection refused"):
        _result(tags.get(REPO, "never-seen"))


def test_an_image_missing_a_blob_upstream_is_not_kept(tmp_path: Path) -> None:
    upstream, clock = Upstream(), Clock()
    upstream.tags["v1"] = upstream.image(b"present", b"lost")
    del upstream.blobs[_digest(b"lost")]
    tags = _tags(tmp_path, upstream, clock)
    with pytest.raises(UpstreamIncomplete) as caught:
        _result(tags.get(REPO, "v1"))
    assert caught.value.detail == {"missing": [_digest(b"lost")]}
    assert tags.store.get(REPO, "v1") is None


def test_concurrent_lookups_share_one_upstream_request(tmp_path: Path) -> None:
    upstream, clock = Upstream(), Clock()
    upstream.tags["v1"] = upstream.image(b"layer")
    pending: Deferred[Any] = Deferred()
    real = upstream.download
    calls = []

    def slow(namespace: str, name: str, dest: str) -> Deferred[Any]:
        if name.endswith(":v1"):
            calls.append(name)
            return pending.addCallback(lambda _: real(namespace, name, dest))
        return real(namespace, name, dest)

    upstream.download = slow  # type: ignore[method-assign]
    tags = _tags(tmp_path, upstream, clock)
    a, b = tags.get(REPO, "v1"), tags.get(REPO, "v1")
    pending.callback(None)
    assert _result(a) == _result(b) == upstream.tags["v1"] and len(calls) == 1


def test_config_errors_and_names() -> None:
    upstreams = parse_mirrors({"docker.io": None, "ghcr.io": {"url": "https://ghcr.io"},
                               "127.0.0.1:5000": {"url": "http://127.0.0.1:5000"}})
    assert mirrored_name(upstreams, "docker.io", "alpine") == "docker.io/library/alpine"
    assert mirrored_name(upstreams, "docker.io", "bitnami/redis") == "docker.io/bitnami/redis"
    assert mirrored_name(upstreams, "ghcr.io", "alpine") == "ghcr.io/alpine"
    assert mirrored_name(upstreams, "127.0.0.1:5000", "a/b") == "127.0.0.1-5000/a/b"
    assert upstreams["docker.io"].url == "https://registry-1.docker.io"
    with pytest.raises(RegistryError, match=r"registry\.mirrors") as caught:
        mirrored_name(upstreams, "quay.io", "x")
    assert caught.value.status == 404
    for bad, message in [
        ({"h": {"url": "ftp://x"}}, "url"),
        ({"h": {"url": "http://x", "tls": 1}}, "unknown keys tls"),
        ({"a b": {"url": "http://x"}}, "host"),
        ({"h": {"url": "http://x", "tag_ttl": "soon"}}, "seconds"),
        ({"h1": {"url": "http://x", "name": "same"}, "h2": {"url": "http://y", "name": "same"}}, "unique"),
        ([1], "mapping"),
    ]:
        with pytest.raises(MirrorConfigError, match=message):
            parse_mirrors(bad)
