"""Garbage collection on real servers: an origin with an ``fs`` backend, a build-index, proxies.

A dry run changes nothing; a run sweeps exactly the blobs no tag reaches (store and backend)
and spares recent uploads; under a loop of concurrent pushes and moving tags no blob of any
tagged image is lost: every tag pulls afterwards through a proxy with an empty cache, and
every byte is checked against its digest.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.integration.p2p_fixtures import origin_config
from tests.integration.registry_http import Registry, TLSClient
from tests.integration.registry_support import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    build_index_config,
    build_oci_layout,
    proxy_config,
    sha256,
    skopeo,
)
from tests.support import REPO

GRACE = 4
GRACE_LOOP = 2
PUSHES = 40


def _cluster(servers: Any, pki: Path, tmp_path: Path) -> dict[str, Any]:
    origin = servers.start("kraken-origin", origin_config(pki, tmp_path / "o", tmp_path / "backend"),
                           name="origin")
    index = servers.start("kraken-build-index", build_index_config(pki, tmp_path / "bi", origin.port("http")),
                          name="build-index")
    proxy = servers.start("kraken-proxy", proxy_config(pki, tmp_path / "p", origin.port("http"),
                                                       index.port("http")), name="proxy")
    return {"origin": origin, "index": index, "proxy": proxy}


def _stored(tmp_path: Path) -> tuple[set[str], set[str]]:
    """Digest hexes in the origin's store and in its backend."""
    store = {p.parent.name for p in (tmp_path / "o" / "store").glob("cache/??/??/*/data")}
    backend = {p.name for p in (tmp_path / "backend").iterdir() if len(p.name) == 64}
    return store, backend


def _wait_for_backend(tmp_path: Path, digests: list[str]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if {d.split(":")[1] for d in digests} <= _stored(tmp_path)[1]:
            return
        time.sleep(0.05)
    raise AssertionError("write-back did not finish")


def _post(pki: Path, port: int, role: str, path: str, body: Any) -> int:
    context = TLSClient(pki, port, role=role).context
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _gc_cli(pki: Path, index: Any, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "kraken.cli", "registry", "gc", "--build-index",
         f"127.0.0.1:{index.port('http')}", "--pki", str(pki), "--json", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_dry_run_then_sweep(servers: Any, pki: Path, tmp_path: Path) -> None:
    c = _cluster(servers, pki, tmp_path)
    address = f"127.0.0.1:{c['proxy'].port('registry')}"
    shared = {"shared.txt": b"a base layer both images use\n" * 100}
    keep = build_oci_layout(tmp_path / "keep", "v1", [shared, {"keep.txt": b"kept"}])
    drop = build_oci_layout(tmp_path / "drop", "v1", [shared, {"drop.txt": b"dropped"}])
    skopeo("copy", "--dest-tls-verify=false", f"oci:{keep.layout}:v1", f"docker://{address}/test/gc:keep")
    skopeo("copy", "--dest-tls-verify=false", f"oci:{drop.layout}:v1", f"docker://{address}/test/gc:drop")
    reg = Registry("127.0.0.1", c["proxy"].port("registry"))
    # untagged referrers (OCI 1.1): a signature of the kept image stays, one of the dropped goes
    signature = _referrer(reg, keep.manifest, "kept")
    dropped_signature = _referrer(reg, drop.manifest, "gone")
    assert reg.request("DELETE", "/v2/test/gc/manifests/drop").status == 202
    dropped = (drop.manifest, drop.config, drop.layers[1], dropped_signature)
    garbage = {sha256(b).split(":")[1] for b in dropped}
    _wait_for_backend(tmp_path, [f"sha256:{h}" for h in garbage])
    time.sleep(GRACE + 0.2)  # the pushes asked about the blobs: they are spared until then
    before = _stored(tmp_path)

    dry = _gc_cli(pki, c["index"], "--dry-run", "--grace", f"{GRACE}s")
    assert dry["dry_run"] is True and dry["live"] == 6  # keep's manifest, config, two layers; its signature
    assert sha256(signature).split(":")[1] in _stored(tmp_path)[0]
    origin_report = next(iter(dry["origins"].values()))
    assert {(s["digest"].split(":")[1], s["where"]) for s in origin_report["swept"]} == \
        {(h, where) for h in garbage for where in ("store", "backend")}
    assert _stored(tmp_path) == before

    fresh = os.urandom(1000)  # uploaded just now, not tagged yet: spared
    assert reg.upload("test/gc", fresh, sha256(fresh)).status == 201
    _wait_for_backend(tmp_path, [sha256(fresh)])
    before = _stored(tmp_path)
    status, body = TLSClient(pki, c["index"].port("http")).request("POST", f"/gc?grace={GRACE}")
    swept = json.loads(body)
    assert status == 200 and swept["swept_count"] == 8 and swept["reclaimed_bytes"]["store"] > 0
    assert swept["referrers_forgotten"] == 1  # the dropped image's signature leaves the index
    listed = reg.request("GET", f"/v2/test/gc/referrers/{sha256(keep.manifest)}").json()["manifests"]
    assert [m["digest"] for m in listed] == [sha256(signature)]
    assert reg.request("GET", f"/v2/test/gc/referrers/{sha256(drop.manifest)}").json()["manifests"] == []
    store, backend = _stored(tmp_path)
    assert store == before[0] - garbage and backend == before[1] - garbage
    assert sha256(fresh).split(":")[1] in store and sha256(fresh).split(":")[1] in backend
    _, metrics = TLSClient(pki, c["origin"].port("http")).request("GET", "/metrics")
    assert b'kraken_origin_gc_reclaimed_bytes_total{where="store"}' in metrics
    _, metrics = TLSClient(pki, c["index"].port("http")).request("GET", "/metrics")
    assert b'kraken_build_index_gc_runs_total{outcome="dry_run"} 1.0' in metrics

    # the kept image pulls from the origins through a proxy that caches nothing yet
    cold = servers.start("kraken-proxy", proxy_config(pki, tmp_path / "cold", c["origin"].port("http"),
                                                      c["index"].port("http")), name="cold-proxy")
    out = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", f"docker://127.0.0.1:{cold.port('registry')}/test/gc:keep",
           f"dir:{out}")
    assert (out / "manifest.json").read_bytes() == keep.manifest
    # agents may not run it, and only a build-index asks an origin to sweep, with a sound request
    assert TLSClient(pki, c["index"].port("http"), role="agent").request("POST", "/gc?dry_run=true")[0] == 403
    sound = {"live": [], "grace": 0, "dry_run": True}
    assert _post(pki, c["origin"].port("http"), "client", "/internal/gc", sound) == 403
    bad_requests: list[Any] = [
        {**sound, "live": "all"}, {**sound, "live": ["sha256:" + "0" * 64]}, {**sound, "live": ["xyz"]},
        {**sound, "grace": -1}, {**sound, "grace": "1h"}, {"live": [], "grace": 0}, [], "nonsense",
    ]
    for bad in bad_requests:
        assert _post(pki, c["origin"].port("http"), "build-index", "/internal/gc", bad) == 400, bad
    assert _stored(tmp_path)[0] == store


EMPTY = b"{}"


def _referrer(reg: Registry, subject: bytes, seed: str) -> bytes:
    """Push an untagged signature of the manifest *subject*; its bytes."""
    assert reg.upload("test/gc", EMPTY, sha256(EMPTY)).status == 201
    empty = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(EMPTY), "size": 2}
    body = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.signature",
        "config": empty, "layers": [empty], "annotations": {"seed": seed},
        "subject": {"mediaType": OCI_MANIFEST, "digest": sha256(subject), "size": len(subject)},
    }).encode()
    put = reg.put_manifest("test/gc", sha256(body), body, OCI_MANIFEST)
    assert put.status == 201 and put.header("OCI-Subject") == sha256(subject), put.body
    return body


def _image(seed: str, shared: bytes) -> tuple[bytes, list[bytes]]:
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = hashlib.sha256(seed.encode()).digest() * 256
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(b), "size": len(b)} for b in (shared, layer)],
    }).encode()
    return manifest, [config, shared, layer]


def test_no_tagged_blob_is_lost_under_concurrent_pushes(servers: Any, pki: Path, tmp_path: Path) -> None:
    c = _cluster(servers, pki, tmp_path)
    reg = Registry("127.0.0.1", c["proxy"].port("registry"))
    shared = os.urandom(50_000)
    tagged: dict[str, tuple[bytes, list[bytes]]] = {}
    failures: list[str] = []

    def push_loop() -> None:
        for n in range(PUSHES):
            tag = f"t{n % 12}"  # tags move: earlier images become garbage
            manifest, blobs = _image(f"image-{n}", shared)
            for blob in blobs:
                if reg.request("HEAD", f"/v2/test/loop/blobs/{sha256(blob)}").status != 200:
                    reply = reg.upload("test/loop", blob, sha256(blob))
                    if reply.status != 201:
                        failures.append(f"upload {n}: {reply.status} {reply.body[:200]!r}")
            put = reg.put_manifest("test/loop", tag, manifest, OCI_MANIFEST)
            if put.status != 201:
                failures.append(f"manifest {n}: {put.status} {put.body[:300]!r}")
            else:
                tagged[tag] = (manifest, blobs)

    operator = TLSClient(pki, c["index"].port("http"))
    pusher = threading.Thread(target=push_loop)
    pusher.start()
    runs = []
    deadline = time.monotonic() + 180
    while pusher.is_alive() and time.monotonic() < deadline:
        status, body = operator.request("POST", f"/gc?grace={GRACE_LOOP}")
        assert status == 200, body
        runs.append(json.loads(body))
        time.sleep(0.2)
    pusher.join(60)
    assert not pusher.is_alive() and not failures, failures[:5]
    assert len(runs) >= 3, runs
    time.sleep(GRACE_LOOP + 0.2)  # every replaced image is now past the grace period
    status, body = operator.request("POST", f"/gc?grace={GRACE_LOOP}")
    assert status == 200, body
    runs.append(json.loads(body))
    assert sum(r["swept_count"] for r in runs) >= PUSHES - 12, runs[-1]  # the replaced images went

    cold = servers.start("kraken-proxy", proxy_config(pki, tmp_path / "cold", c["origin"].port("http"),
                                                      c["index"].port("http")), name="cold-proxy")
    cold_registry = Registry("127.0.0.1", cold.port("registry"))
    for tag, (manifest, blobs) in sorted(tagged.items()):
        got = cold_registry.request("GET", f"/v2/test/loop/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
        assert got.status == 200 and got.body == manifest, tag
        for blob in blobs:
            reply = cold_registry.request("GET", f"/v2/test/loop/blobs/{sha256(blob)}")
            assert reply.status == 200 and sha256(reply.body) == sha256(blob), (tag, sha256(blob))
    # and one through skopeo, which checks every digest itself
    skopeo("copy", "--src-tls-verify=false", f"docker://127.0.0.1:{cold.port('registry')}/test/loop:t0",
           f"dir:{tmp_path / 'pulled'}")
    assert operator.request("GET", f"/tags/{quote('test/loop:t0', safe='')}")[0] == 200
