"""Pull through P2P: push to kraken-proxy, pull with skopeo from a kraken-agent's registry port."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from kraken.registry.accounts import hash_password
from tests.integration.p2p_fixtures import agent_config, origin_config, tracker_config
from tests.integration.registry_http import Registry
from tests.integration.registry_support import (
    build_index_config,
    build_oci_layout,
    proxy_config,
    sha256,
    skopeo,
)


def _agent(servers: Any, pki: Path, root: Path, tracker: Any, index: Any, name: str, **registry: Any) -> Any:
    config = agent_config(pki, root, tracker.port("http"))
    config["registry"] = {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "build_index": f"127.0.0.1:{index.port('http')}",
        **registry,
    }
    return servers.start("kraken-agent", config, name=name)


def test_pull_from_agent_through_p2p(servers: Any, pki: Path, tmp_path: Path) -> None:
    origin = servers.start("kraken-origin", origin_config(pki, tmp_path / "o", tmp_path / "backend"),
                           name="origin")
    tracker = servers.start("kraken-tracker", tracker_config(pki, origin.port("http")), name="tracker")
    index = servers.start("kraken-build-index", build_index_config(pki, tmp_path / "bi", origin.port("http")),
                          name="build-index")
    proxy = servers.start("kraken-proxy", proxy_config(pki, tmp_path / "p", origin.port("http"),
                                                       index.port("http")), name="proxy")
    agent = _agent(servers, pki, tmp_path / "a1", tracker, index, "agent-1")

    image = build_oci_layout(tmp_path / "layout", "v1", [{"big.bin": bytes(range(256)) * 8192}])
    skopeo("copy", "--dest-tls-verify=false", f"oci:{image.layout}:v1",
           f"docker://127.0.0.1:{proxy.port('registry')}/test/p2p:v1")

    address = f"127.0.0.1:{agent.port('registry')}"
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{address}/test/p2p:v1").stdout)
    assert inspected["Digest"] == image.manifest_digest
    out = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", f"docker://{address}/test/p2p:v1", f"dir:{out}")
    assert (out / "manifest.json").read_bytes() == image.manifest
    for blob in (image.config, *image.layers):
        assert (out / sha256(blob).split(":")[1]).read_bytes() == blob
    tags = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{address}/test/p2p").stdout)
    assert tags["Tags"] == ["v1"]

    reg = Registry("127.0.0.1", agent.port("registry"))
    push = reg.request("POST", "/v2/test/p2p/blobs/uploads/")
    assert push.status == 405 and push.error_codes() == ["UNSUPPORTED"]
    assert "proxy" in push.json()["errors"][0]["message"]
    put = reg.request("PUT", "/v2/test/p2p/manifests/v2", image.manifest,
                      {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert put.status == 405
    # the agent's port is the pull side: deletes go to the proxy
    for path in (f"/v2/test/p2p/manifests/{image.manifest_digest}", "/v2/test/p2p/manifests/v1",
                 f"/v2/test/p2p/blobs/{sha256(image.layers[0])}"):
        refused = reg.request("DELETE", path)
        assert refused.status == 405 and refused.error_codes() == ["UNSUPPORTED"], path
    missing = reg.request("GET", "/v2/test/p2p/manifests/nope")
    assert missing.status == 404 and missing.error_codes() == ["MANIFEST_UNKNOWN"]
    missing = reg.request("GET", f"/v2/test/p2p/blobs/{sha256(b'never pushed')}")
    assert missing.status == 404 and missing.error_codes() == ["BLOB_UNKNOWN"]
    layer = f"/v2/test/p2p/blobs/{sha256(image.layers[0])}"
    ranged = reg.request("GET", layer, headers={"Range": "bytes=0-9"})
    assert ranged.status == 206 and ranged.body == image.layers[0][:10]

    # an agent that admits only another network refuses loopback clients
    fenced = _agent(servers, pki, tmp_path / "a2", tracker, index, "agent-2", allow_cidrs=["10.0.0.0/8"])
    denied = Registry("127.0.0.1", fenced.port("registry")).request("GET", "/v2/test/p2p/manifests/v1")
    assert denied.status == 403 and denied.error_codes() == ["DENIED"]

    # an agent may ask pullers to log in (its own token endpoint, the same accounts file format)
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text(yaml.safe_dump({
        "robots": {"puller": hash_password("pull-pw")},
        "grants": [{"repository": "test/.*", "actions": ["pull"], "robots": ["puller"]}],
    }))
    guarded = _agent(servers, pki, tmp_path / "a3", tracker, index, "agent-3",
                     auth={"mode": "token", "accounts": str(accounts)})
    guarded_address = f"127.0.0.1:{guarded.port('registry')}"
    anonymous = subprocess.run(["skopeo", "--insecure-policy", "inspect", "--tls-verify=false",
                                f"docker://{guarded_address}/test/p2p:v1"], capture_output=True, text=True)
    assert anonymous.returncode != 0 and "unauthorized" in anonymous.stderr.lower(), anonymous.stderr
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", "--creds=robot$puller:pull-pw",
                                  f"docker://{guarded_address}/test/p2p:v1").stdout)
    assert inspected["Digest"] == image.manifest_digest
