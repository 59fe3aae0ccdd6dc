"""The agent's registry port as a pull-through mirror of two upstream registries.

Real parts: two Debian docker-registry upstreams (htpasswd basic auth; token auth behind a
token service), images pushed to them with skopeo, never to kraken, pulled by Debian's
containerd through the agent with ``hosts.toml``; kraken's origin, tracker, build-index and
agents as twistd processes.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kraken.cli.registry import write_demo_image
from tests.integration.mirror_support import (
    PASSWORD,
    USER,
    Containerd,
    TokenService,
    push,
    token_registry,
    upstream_digest,
    write_htpasswd,
)
from tests.integration.p2p_fixtures import agent_config, origin_config, tracker_config
from tests.integration.registry_http import Registry
from tests.integration.registry_support import DockerRegistry, build_index_config, build_oci_layout, sha256


def _mirrors(*upstreams: tuple[str, str], password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
    return {host: {"url": url, "username": USER, "password": password, "tag_ttl": 1, **extra}
            for host, url in upstreams}


class Kraken:
    """An origin, a tracker and a build-index mirroring *mirrors*; agents on demand."""

    def __init__(self, servers: Any, pki: Path, root: Path, mirrors: dict[str, Any]) -> None:
        self.servers, self.pki, self.root, self.mirrors = servers, pki, root, mirrors
        self.origin = servers.start("kraken-origin", origin_config(pki, root / "o", mirrors=mirrors),
                                    name="origin")
        self.tracker = servers.start("kraken-tracker", tracker_config(pki, self.origin.port("http")),
                                     name="tracker")
        index = build_index_config(pki, root / "bi", self.origin.port("http"))
        index["buildindex"]["mirrors"] = mirrors
        self.index = servers.start("kraken-build-index", index, name="build-index")

    def agent(self, name: str, **registry: Any) -> Any:
        config = agent_config(self.pki, self.root / name, self.tracker.port("http"))
        config["registry"] = {"listen": ["tcp:0:interface=127.0.0.1"],
                              "build_index": f"127.0.0.1:{self.index.port('http')}",
                              "mirrors": {host: {"url": m["url"]} for host, m in self.mirrors.items()},
                              **registry}
        return self.servers.start("kraken-agent", config, name=name)


def test_containerd_pulls_two_upstreams_through_the_agent(servers: Any, pki: Path, tmp_path: Path) -> None:
    basic = DockerRegistry(tmp_path / "basic", htpasswd=write_htpasswd(tmp_path / "htpasswd"))
    tokens = TokenService(tmp_path / "tokens")
    bearer = token_registry(tmp_path / "bearer", tokens)
    containerd = None
    try:
        single = build_oci_layout(tmp_path / "single", "v1", [{"single.txt": b"one platform\n" * 5000}])
        push(f"oci:{single.layout}:v1", basic.address, "test/single:v1")
        write_demo_image(tmp_path / "multi", "v1")
        push(f"oci:{tmp_path / 'multi'}:v1", bearer.address, "test/multi:v1", all_platforms=True)
        single_digest = upstream_digest(basic.address, "test/single:v1")
        multi_digest = upstream_digest(bearer.address, "test/multi:v1")
        assert single_digest == single.manifest_digest

        kraken = Kraken(servers, pki, tmp_path / "k", _mirrors(
            (basic.address, f"http://{basic.address}"), (bearer.address, f"http://{bearer.address}")))
        containerd = Containerd(tmp_path / "containerd")
        agent = kraken.agent("agent-1", containerd_socket=str(containerd.socket))
        mirror = f"http://127.0.0.1:{agent.port('registry')}"

        for upstream in (basic, bearer):
            containerd.write_hosts(upstream.address, f"http://{upstream.address}", mirror)
        containerd.pull(f"{basic.address}/test/single:v1")
        containerd.pull(f"{bearer.address}/test/multi:v1", "--platform", "linux/arm64")
        assert containerd.digest(f"{basic.address}/test/single:v1") == single_digest
        assert containerd.digest(f"{bearer.address}/test/multi:v1") == multi_digest
        assert any(r["authorized"] and "scope=repository" in r["path"] for r in tokens.requests)

        # served by the agent: the same manifests answer there under ?ns=
        reg = Registry("127.0.0.1", agent.port("registry"))
        got = reg.request("GET", f"/v2/test/multi/manifests/v1?ns={bearer.address}",
                          headers={"Accept": "application/vnd.oci.image.index.v1+json"})
        assert got.status == 200 and got.header("Docker-Content-Digest") == multi_digest
        arm64 = next(m for m in json.loads(got.body)["manifests"] if m["platform"]["architecture"] == "arm64")
        got = reg.request("GET", f"/v2/test/multi/manifests/{arm64['digest']}?ns={bearer.address}")
        assert got.status == 200 and sha256(got.body) == arm64["digest"]

        # preload: the agent makes containerd pull an image through itself, under its upstream name
        api = Registry("127.0.0.1", agent.port("http"))
        mirrored = quote(f"127.0.0.1-{bearer.port}/test/multi:v1", safe="")
        done = api.request("GET", f"/preload/tags/{mirrored}?runtime=containerd&namespace=preloaded")
        assert done.status == 200, done.body
        assert done.json()["image"] == f"{bearer.address}/test/multi:v1"
        listed = containerd.ctr("--namespace", "preloaded", "images", "ls").stdout
        assert f"{bearer.address}/test/multi:v1" in listed and multi_digest in listed
        refused = api.request("GET", f"/preload/tags/{mirrored}?runtime=docker")
        assert refused.status == 400 and refused.json()["error"]["code"] == "RUNTIME_UNSUPPORTED"
        missing = api.request("GET", "/preload/tags/test%2Fnever:v1?runtime=containerd&namespace=preloaded")
        assert missing.status == 500 and missing.json()["error"]["code"] == "PRELOAD_FAILED"
        assert f"127.0.0.1:{agent.port('registry')}/test/never:v1" in missing.json()["error"]["message"]
    finally:
        if containerd is not None:
            containerd.stop()
        basic.stop()
        bearer.stop()
        tokens.stop()

    # both upstreams are gone: a second agent and a fresh containerd still pull what was pulled
    late = kraken.agent("agent-2")
    second = Containerd(tmp_path / "containerd-2")
    try:
        mirror = f"http://127.0.0.1:{late.port('registry')}"
        for upstream in (basic, bearer):
            second.write_hosts(upstream.address, f"http://{upstream.address}", mirror)
        second.pull(f"{basic.address}/test/single:v1")
        second.pull(f"{bearer.address}/test/multi:v1", "--platform", "linux/arm64")
        assert second.digest(f"{basic.address}/test/single:v1") == single_digest
        assert second.digest(f"{bearer.address}/test/multi:v1") == multi_digest
    finally:
        second.stop()


def test_mirror_refuses_clearly(servers: Any, pki: Path, tmp_path: Path) -> None:
    basic = DockerRegistry(tmp_path / "basic", htpasswd=write_htpasswd(tmp_path / "htpasswd"))
    try:
        image = build_oci_layout(tmp_path / "img", "v1", [{"a.txt": b"a\n"}, {"b.txt": b"b\n"}])
        push(f"oci:{image.layout}:v1", basic.address, "test/img:v1")
        push(f"oci:{image.layout}:v1", basic.address, "test/broken:v1")
        port = basic.port
        kraken = Kraken(servers, pki, tmp_path / "k", {
            **_mirrors((f"127.0.0.1:{port}", f"http://127.0.0.1:{port}")),
            **_mirrors((f"localhost:{port}", f"http://127.0.0.1:{port}"), password="wrong"),
        })
        reg = Registry("127.0.0.1", kraken.agent("agent").port("registry"))

        unknown = reg.request("GET", "/v2/test/img/manifests/v1?ns=elsewhere.example")
        assert unknown.status == 404 and unknown.error_codes() == ["NAME_UNKNOWN"]
        assert "registry.mirrors" in unknown.json()["errors"][0]["message"]

        refused = reg.request("GET", f"/v2/test/img/manifests/v1?ns=localhost:{port}")
        assert refused.status == 503
        assert "refused our credentials" in refused.json()["errors"][0]["message"]

        # the upstream loses a layer of test/broken: its tag is not served, not even the manifest
        gone = sha256(image.layers[1])
        credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        deleted = Registry("127.0.0.1", port).request("DELETE", f"/v2/test/broken/blobs/{gone}",
                                                      headers={"Authorization": f"Basic {credentials}"})
        assert deleted.status == 202, deleted.body
        broken = reg.request("GET", f"/v2/test/broken/manifests/v1?ns=127.0.0.1:{port}")
        assert broken.status == 503
        error = broken.json()["errors"][0]
        assert "lacks 1 blob" in error["message"] and error["detail"] == {"missing": [gone]}

        good = reg.request("GET", f"/v2/test/img/manifests/v1?ns=127.0.0.1:{port}")
        assert good.status == 200 and good.body == image.manifest
        listed = reg.request("GET", f"/v2/test/img/tags/list?ns=127.0.0.1:{port}")
        assert listed.status == 200 and listed.json()["tags"] == ["v1"]
    finally:
        basic.stop()
