#!/usr/bin/env python3
"""What a login costs: manifest requests/s on a kraken-proxy with and without ``auth``.

Two standalone proxies (tags and blobs kept locally, so the registry code dominates) hold the
same small image; one has ``auth.mode: none`` (the baseline, measured in the same run), the
other ``auth.mode: token``. Measured from keep-alive client threads:

- manifest-by-tag ``GET``\\ s/s: baseline; with a Bearer token (JWT check and grants per
  request); with basic credentials (a remembered password: no hashing per request),
- tokens issued per second by ``GET /token`` for one login (its password is checked once,
  argon2 in a worker thread, then remembered: this is the JWT signing and the grants).

Rounds are interleaved and each figure keeps its best, which damps a shared machine's noise.

    .venv/bin/python benchmarks/registry_auth.py [--threads 8] [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from benchmarks.registry import get_rate
from kraken.registry.accounts import hash_password
from tests.integration.registry_http import Registry
from tests.integration.registry_support import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, sha256
from tests.support import ServerProcess

REPOSITORY = "bench/app"
USER, PASSWORD = "bench", "bench-password"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def push(reg: Registry, headers: dict[str, str]) -> None:
    config, layer = b'{"architecture":"amd64","os":"linux"}', b"layer" * 1000
    for blob in (config, layer):
        start = reg.request("POST", f"/v2/{REPOSITORY}/blobs/uploads/", headers=headers)
        location = start.header("Location")
        assert start.status == 202 and location, start.status
        done = reg.request("PUT", f"{location}&digest={sha256(blob)}" if "?" in location
                           else f"{location}?digest={sha256(blob)}", blob, headers)
        assert done.status == 201, done.status
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(layer), "size": len(layer)}],
    }).encode()
    put = reg.request("PUT", f"/v2/{REPOSITORY}/manifests/v1", manifest,
                      {"Content-Type": OCI_MANIFEST, **headers})
    assert put.status == 201, put.status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kraken-auth-bench-") as tmp:
        work = Path(tmp)
        (work / "accounts.yaml").write_text(yaml.safe_dump({
            "users": {USER: hash_password(PASSWORD)},
            "grants": [{"repository": ".*", "actions": ["pull", "push"], "users": [USER]}],
        }))
        procs: list[ServerProcess] = []
        try:
            for name, auth in (("none", {"mode": "none"}),
                               ("token", {"mode": "token", "accounts": str(work / "accounts.yaml")})):
                procs.append(ServerProcess("kraken-proxy", {
                    "listen": ["tcp:0:interface=127.0.0.1"], "log": {"level": "warn"},
                    "proxy": {"storage": str(work / name)}, "auth": auth,
                }, work / f"proc-{name}", []).start())
            plain, guarded = (p.port("registry") for p in procs)
            push(Registry("127.0.0.1", plain), {})
            push(Registry("127.0.0.1", guarded), {"Authorization": BASIC})
            scope = f"repository:{REPOSITORY}:pull"
            issued = Registry("127.0.0.1", guarded).request("GET", f"/token?service=kraken&scope={scope}",
                                                            headers={"Authorization": BASIC})
            bearer = {"Authorization": f"Bearer {issued.json()['token']}", "Accept": OCI_MANIFEST}
            manifest = f"/v2/{REPOSITORY}/manifests/v1"
            best: dict[str, float] = {}
            cases: list[tuple[str, int, str, dict[str, str]]] = [
                ("manifest GET/s, auth none (baseline)", plain, manifest, {"Accept": OCI_MANIFEST}),
                ("manifest GET/s, Bearer token", guarded, manifest, bearer),
                ("manifest GET/s, basic credentials", guarded, manifest,
                 {"Authorization": BASIC, "Accept": OCI_MANIFEST}),
                ("tokens issued/s (password remembered)", guarded, f"/token?service=kraken&scope={scope}",
                 {"Authorization": BASIC}),
            ]
            for _ in range(args.rounds):
                for label, port, path, headers in cases:
                    figure = get_rate(port, path, headers, args.threads, args.seconds)
                    best[label] = max(best.get(label, 0.0), figure)
        finally:
            for p in procs:
                p.stop()
    baseline = best[cases[0][0]]
    for label, *_ in cases:
        compared = label.startswith("manifest") and label != cases[0][0]
        ratio = f"  ({best[label] / baseline:.2f}x baseline)" if compared else ""
        print(f"{label:<40} {best[label]:>9.0f}{ratio}")


if __name__ == "__main__":
    main()
