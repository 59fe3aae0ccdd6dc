"""Preheat (docker-registry notifications, Harbor's Kraken provider) and prefetch v1/v2 on the proxy.

Real parts: Debian's docker-registry upstreams (one configured with ``notifications.endpoints``
pointing at the proxy), skopeo pushes, kraken's origin, tracker, build-index, proxy and agent.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

from kraken.cli.registry import write_demo_image
from kraken.core.cas import CAStore
from kraken.core.digest import Digest
from tests.integration.mirror_support import push_anonymous
from tests.integration.p2p_fixtures import agent_config, origin_config, tracker_config
from tests.integration.registry_http import Registry
from tests.integration.registry_support import (
    DockerRegistry,
    build_index_config,
    build_oci_layout,
    proxy_config,
    sha256,
)
from tests.support import free_port

SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
MAX_PREFETCH = 64 * 1024


def _image_digests(reg: Registry, repo: str, tag: str) -> tuple[str, list[str]]:
    """The tag's digest and every digest the image needs (one level into an index), as served."""
    accept = {"Accept": "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"}
    top = reg.request("GET", f"/v2/{repo}/manifests/{tag}", headers=accept)
    assert top.status == 200, top.body
    digest = top.header("Docker-Content-Digest")
    assert digest
    out = [digest]
    doc = json.loads(top.body)
    manifests = [doc]
    for child in doc.get("manifests", []):
        out.append(child["digest"])
        got = reg.request("GET", f"/v2/{repo}/manifests/{child['digest']}", headers=accept)
        manifests.append(json.loads(got.body))
    for m in manifests:
        out.extend(d["digest"] for d in [m.get("config"), *m.get("layers", [])] if d)
    return digest, out


def _wait_for(store: CAStore, digests: list[str], timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    missing = digests
    while time.monotonic() < deadline:
        missing = [d for d in digests if not store.has(Digest.parse(d))]
        if not missing:
            return []
        time.sleep(0.2)
    return missing


class Cluster:
    def __init__(self, servers: Any, pki: Path, root: Path, mirrors: dict[str, Any]) -> None:
        self.root = root
        self.origin = servers.start("kraken-origin", origin_config(pki, root / "o", mirrors=mirrors),
                                    name="origin")
        self.store = CAStore(root / "o" / "store")
        self.tracker = servers.start("kraken-tracker", tracker_config(pki, self.origin.port("http")),
                                     name="tracker")
        index = build_index_config(pki, root / "bi", self.origin.port("http"))
        index["buildindex"]["mirrors"] = mirrors
        self.index = servers.start("kraken-build-index", index, name="build-index")
        proxy = proxy_config(pki, root / "p", self.origin.port("http"), self.index.port("http"))
        proxy["proxy"].update(mirrors=mirrors, prefetch_max_blob_size=MAX_PREFETCH)
        self.proxy = servers.start("kraken-proxy", proxy, name="proxy")
        self.http = Registry("127.0.0.1", self.proxy.port("registry"))
        self.servers, self.pki, self.mirrors = servers, pki, mirrors

    def agent(self, name: str) -> Registry:
        config = agent_config(self.pki, self.root / name, self.tracker.port("http"))
        config["registry"] = {"listen": ["tcp:0:interface=127.0.0.1"],
                              "build_index": f"127.0.0.1:{self.index.port('http')}", "mirrors": self.mirrors}
        agent = self.servers.start("kraken-agent", config, name=name)
        return Registry("127.0.0.1", agent.port("registry"))

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.http.request("POST", path, raw, {"Content-Type": "application/json", **(headers or {})})


def test_preheat_prefetch_and_harbor(servers: Any, pki: Path, tmp_path: Path) -> None:
    notified_port, plain_port = free_port(), free_port()
    hosts = [f"127.0.0.1:{notified_port}", f"127.0.0.1:{plain_port}"]
    mirrors = {h: {"url": f"http://{h}", "tag_ttl": 1} for h in hosts}
    cluster = Cluster(servers, pki, tmp_path / "k", mirrors)
    webhook = {"endpoints": [{
        "name": "kraken", "url": f"http://127.0.0.1:{cluster.proxy.port('registry')}/registry/notifications",
        "timeout": "5s", "threshold": 3, "backoff": "1s",
        "headers": {"Content-Type": ["application/json"]},
    }]}
    notified = DockerRegistry(tmp_path / "notified", extra={"notifications": webhook}, port=notified_port)
    plain = DockerRegistry(tmp_path / "plain", port=plain_port)
    try:
        # preheat: a push to the upstream alone puts every blob of the index on the origins
        write_demo_image(tmp_path / "multi", "v1")
        push_anonymous(f"oci:{tmp_path / 'multi'}:v1", notified.address, "test/pre:v1", all_platforms=True)
        upstream = Registry("127.0.0.1", notified_port)
        digest, needed = _image_digests(upstream, "test/pre", "v1")
        assert len(needed) == 7
        assert _wait_for(cluster.store, needed) == []

        # prefetch v2 and v1 (Uber's bodies), size filter, error shapes
        small = build_oci_layout(tmp_path / "small", "v1", [{"s.txt": b"small\n"}])
        push_anonymous(f"oci:{small.layout}:v1", plain.address, "team/app:v2")
        push_anonymous(f"oci:{small.layout}:v1", plain.address, "team/app:v1")
        big = build_oci_layout(tmp_path / "big", "v1", [{"b.bin": random.Random(1).randbytes(200_000)},
                                                              {"c.txt": b"c"}])
        push_anonymous(f"oci:{big.layout}:v1", plain.address, "team/big:v1")
        small_digests = [small.manifest_digest, sha256(small.config), sha256(small.layers[0])]
        assert all(not cluster.store.has(Digest.parse(d)) for d in small_digests)
        trace = uuid.uuid4().hex
        answer = cluster.post("/proxy/v2/registry/prefetch", {"tag": f"{plain.address}/team/app:v2",
                                                              "trace_id": trace})
        assert answer.status == 200, answer.body
        body = answer.json()
        assert body["prefetched"] is True and body["status"] == "success" and body["trace_id"] == trace
        assert body["tag"] == f"{plain.address}/team/app:v2" and "3 blobs" in body["message"]
        assert _wait_for(cluster.store, small_digests) == []

        answer = cluster.post("/proxy/v1/registry/prefetch", {"tag": f"{plain.address}/team/big:v1"})
        assert answer.status == 200 and answer.json()["prefetched"] is True, answer.body
        assert "1 outside the size limits skipped" in answer.json()["message"]
        kept = [big.manifest_digest, sha256(big.config), sha256(big.layers[1])]
        assert _wait_for(cluster.store, kept) == []
        assert not cluster.store.has(Digest.parse(sha256(big.layers[0])))  # over prefetch_max_blob_size

        for body, status, code in [
            (b"{not json", 400, "BAD_JSON"),
            ({"tag": "no-host-or-tag"}, 400, "BAD_TAG"),
            ({"tag": f"{plain.address}/team/app:nope", "trace_id": "t1"}, 404, "TAG_UNKNOWN"),
        ]:
            answer = cluster.post("/proxy/v2/registry/prefetch", body)
            assert answer.status == status, answer.body
            error = answer.json()
            assert error["error"] == code and error["prefetched"] is False and error["status"] == "failure"
            assert error["message"] and "trace_id" in error
        assert answer.json()["trace_id"] == "t1"

        # Harbor's Kraken preheat provider: GET /health, then its notification (Go field names)
        harbor = build_oci_layout(tmp_path / "harbor", "v1", [{"h.txt": b"from harbor\n"}])
        push_anonymous(f"oci:{harbor.layout}:v1", plain.address, "library/harbor:v1")
        health = cluster.http.request("GET", "/health", headers={"Accept": "application/json"})
        assert health.status == 200
        event = {"Events": [{
            "Id": "ffbdb0a4ab2bd4ea0fe04ff7", "TimeStamp": "2026-12-05T20:00:00.123456789Z", "Action": "push",
            "Target": {"MediaType": SCHEMA2, "Digest": harbor.manifest_digest, "Repository": "library/harbor",
                       "Url": f"http://{plain.address}", "Tag": "v1"},
            "Request": None, "Actor": None,
        }]}
        answer = cluster.post("/registry/notifications", event, {"Accept": "application/json"})
        assert answer.status == 200, answer.body
        harbor_digests = [harbor.manifest_digest, sha256(harbor.config), sha256(harbor.layers[0])]
        assert _wait_for(cluster.store, harbor_digests) == []
        bad = cluster.post("/registry/notifications", {"nothing": []})
        assert bad.status == 400
    finally:
        notified.stop()
        plain.stop()

    # the upstreams are gone: what was preheated pulls through an agent that never saw it
    agent = cluster.agent("agent")
    got = agent.request("GET", f"/v2/test/pre/manifests/v1?ns={hosts[0]}",
                        headers={"Accept": "application/vnd.oci.image.index.v1+json"})
    assert got.status == 200 and got.header("Docker-Content-Digest") == digest
    for blob in needed[1:]:
        kind = "manifests" if blob in json.dumps(json.loads(got.body)["manifests"]) else "blobs"
        fetched = agent.request("GET", f"/v2/test/pre/{kind}/{blob}?ns={hosts[0]}")
        assert fetched.status == 200 and sha256(fetched.body) == blob
    got = agent.request("GET", f"/v2/library/harbor/manifests/v1?ns={hosts[1]}")
    assert got.status == 200 and got.body == harbor.manifest
