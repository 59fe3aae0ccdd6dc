"""Mirror benchmark: N agents pulling an image for the first time through the pull-through mirror,
against the same N pulling it straight from the upstream docker-registry, in the same run.

Needs root (ip netns, tc) and Debian's docker-registry and skopeo. Topology and link caps are
those of ``p2p_swarm.py`` (every host in its own network namespace on a shared bridge; uploads
and downloads of the origin, the upstream and each agent capped to B; tracker and build-index
uncapped). The image has a config and one layer of ``--size-mb`` random bytes, pushed to the
upstream inside its own namespace. Each "pull" fetches the manifest by tag, the config and the
layer with curl (no unpacking: containerd cannot run once per namespace here):

  * direct   every agent host pulls from the upstream (``http://UPSTREAM:5000``),
  * mirror   every agent host pulls from its local kraken agent (``127.0.0.1:5055/...?ns=UPSTREAM:5000``);
             the origin fetches from the upstream on the first request, the agents share P2P.

Printed: both times, direct/mirror, and how many copies of the layer the upstream sent during
the mirror round (its bridge port's bytes / layer size; target: at most the origins' max_replica).

    sudo .venv/bin/python benchmarks/mirror.py                         # 256 MiB, 10 agents, 50 Mbit/s
    sudo .venv/bin/python benchmarks/mirror.py --size-mb 64 --rate-mbit 100
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import p2p_swarm as swarm

from kraken.core import certs

UPSTREAM_IP = f"{swarm.SUBNET}.2"
UPSTREAM = f"{UPSTREAM_IP}:5000"
INDEX = f"{swarm.TRACKER_IP}:15004"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def build_image(layout: Path, size_mb: int) -> tuple[str, str, int]:
    """An OCI layout with one big uncompressed layer; (config digest, layer digest, layer size)."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer_tmp = layout / "layer"
    h = hashlib.sha256()
    with open(layer_tmp, "wb") as f:
        for _ in range(size_mb):
            chunk = os.urandom(1024 * 1024)
            h.update(chunk)
            f.write(chunk)
    layer = h.hexdigest()
    layer_tmp.rename(blobs / layer)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer}"]},
        }
    ).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    (blobs / config_hex).write_bytes(config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{config_hex}",
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": f"sha256:{layer}",
                    "size": size_mb * 1024 * 1024,
                }
            ],
        }
    ).encode()
    manifest_hex = hashlib.sha256(manifest).hexdigest()
    (blobs / manifest_hex).write_bytes(manifest)
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": f"sha256:{manifest_hex}",
                        "size": len(manifest),
                        "annotations": {"org.opencontainers.image.ref.name": "v1"},
                    }
                ],
            }
        )
    )
    return f"sha256:{config_hex}", f"sha256:{layer}", size_mb * 1024 * 1024


def pull_script(base: str, query: str, config: str, layer: str, timeout: int) -> list[str]:
    accept = f"Accept: {OCI_MANIFEST}"
    steps = [
        f"curl -sf -m {timeout} -H '{accept}' -o /dev/null '{base}/v2/bench/big/manifests/v1{query}'",
        f"curl -sf -m {timeout} -o /dev/null '{base}/v2/bench/big/blobs/{config}{query}'",
        f"curl -sf -m {timeout} -o /dev/null '{base}/v2/bench/big/blobs/{layer}{query}'",
    ]
    return ["sh", "-c", " && ".join(steps)]


def run(n: int, size_mb: int, rate: int, root: Path) -> dict[str, float]:
    pki = root / "pki"
    tracker_ns, origin_ns, agent_ns = swarm.make_topology(n, rate)
    upstream_ns = swarm.add_host(2, UPSTREAM_IP, rate)
    try:
        certs.issue(pki, "origin", "origin", hosts=[swarm.ORIGIN_IP])
        certs.issue(pki, "tracker", "tracker", hosts=[swarm.TRACKER_IP])
        certs.issue(pki, "build-index", "build-index", hosts=[swarm.TRACKER_IP])
        for i in range(n):
            certs.issue(pki, f"agent{i}", "agent", hosts=[f"{swarm.SUBNET}.{10 + i}"])
        registry_dir = root / "upstream"
        registry_dir.mkdir()
        (registry_dir / "config.yml").write_text(
            json.dumps(
                {
                    "version": 0.1,
                    "log": {"level": "warn"},
                    "http": {"addr": UPSTREAM},
                    "storage": {"filesystem": {"rootdirectory": str(registry_dir / "data")}},
                }
            )
        )
        registry = subprocess.Popen(
            swarm.in_ns(upstream_ns, "docker-registry", "serve", str(registry_dir / "config.yml")),
            stdout=open(registry_dir / "log", "wb"),
            stderr=subprocess.STDOUT,
        )
        swarm._procs.append(registry)
        time.sleep(1)
        config, layer, size = build_image(root / "layout", size_mb)
        subprocess.run(
            swarm.in_ns(
                upstream_ns,
                "skopeo",
                "--insecure-policy",
                "copy",
                "--dest-tls-verify=false",
                "--preserve-digests",  # else skopeo gzips the layer on the way
                f"oci:{root / 'layout'}:v1",
                f"docker://{UPSTREAM}/bench/big:v1",
            ),
            check=True,
            capture_output=True,
        )
        mirrors = {UPSTREAM: {"url": f"http://{UPSTREAM}", "tag_ttl": 60}}
        swarm.start(
            origin_ns,
            "kraken-origin",
            {
                "listen": [f"tls:tcp:15002:interface={swarm.ORIGIN_IP}"],
                "tls": swarm.tls(pki, "origin"),
                "origin": {
                    "store": str(root / "origin"),
                    "peer_listen": [f"tls:tcp:15003:interface={swarm.ORIGIN_IP}"],
                    "piece_lengths": {0: swarm.PIECE_LENGTH[0]},
                    "mirrors": mirrors,
                },
            },
            root / "origin-run",
        )
        swarm.start(
            tracker_ns,
            "kraken-tracker",
            {
                "listen": [f"tls:tcp:15001:interface={swarm.TRACKER_IP}"],
                "tls": swarm.tls(pki, "tracker"),
                "tracker": {"origins": [f"{swarm.ORIGIN_IP}:15002"], "announce_interval": 1.0},
            },
            root / "tracker-run",
        )
        swarm.start(
            tracker_ns,
            "kraken-build-index",
            {
                "listen": [f"tls:tcp:15004:interface={swarm.TRACKER_IP}"],
                "tls": swarm.tls(pki, "build-index"),
                "buildindex": {
                    "storage": str(root / "build-index"),
                    "origins": [f"{swarm.ORIGIN_IP}:15002"],
                    "mirrors": mirrors,
                },
            },
            root / "build-index-run",
        )
        for i, ns in enumerate(agent_ns):
            swarm.start(
                ns,
                "kraken-agent",
                {
                    "listen": ["tcp:16000:interface=127.0.0.1"],
                    "tls": swarm.tls(pki, f"agent{i}"),
                    "agent": {
                        "store": str(root / f"agent{i}"),
                        "tracker": f"{swarm.TRACKER_IP}:15001",
                        "peer_listen": [f"tls:tcp:16001:interface={swarm.SUBNET}.{10 + i}"],
                    },
                    "registry": {
                        "listen": ["tcp:5055:interface=127.0.0.1"],
                        "build_index": INDEX,
                        "mirrors": mirrors,
                    },
                },
                root / f"agent{i}-run",
            )
        timeout = int(120 + 3 * n * size * 8 / (rate * 1e6))
        direct = swarm.timed_parallel(
            [
                swarm.in_ns(ns, *pull_script(f"http://{UPSTREAM}", "", config, layer, timeout))
                for ns in agent_ns
            ]
        )
        port = f"b{swarm.TAG}2"
        before = swarm.port_counters()[port][0]
        mirror = swarm.timed_parallel(
            [
                swarm.in_ns(
                    ns, *pull_script("http://127.0.0.1:5055", f"?ns={UPSTREAM}", config, layer, timeout)
                )
                for ns in agent_ns
            ]
        )
        sent = swarm.port_counters()[port][0] - before
        return {"direct": direct, "mirror": mirror, "upstream_copies": sent / size}
    finally:
        swarm.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--rate-mbit", type=int, default=50)
    parser.add_argument("--piece-mb", type=float, default=4.0, help="origin piece length in MiB")
    parser.add_argument("--workdir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) at the end")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("mirror: needs root (network namespaces and tc)", file=sys.stderr)
        return 2
    for tool in ("docker-registry", "skopeo", "curl"):
        if shutil.which(tool) is None:
            print(f"mirror: needs {tool} (apt-get install {tool})", file=sys.stderr)
            return 2
    swarm.PIECE_LENGTH[0] = int(args.piece_mb * 1024 * 1024)
    signal.signal(signal.SIGINT, swarm._on_signal)
    signal.signal(signal.SIGTERM, swarm._on_signal)
    atexit.register(swarm.cleanup_all)
    swarm.allow_congestion_control(swarm.CONGESTION[0])
    root = Path(tempfile.mkdtemp(prefix="kraken-mirror-bench-", dir=args.workdir))
    try:
        certs.ensure_dev_pki(root / "pki", {"client": "client"})
        ideal = args.size_mb * 1024 * 1024 * 8 / (args.rate_mbit * 1e6)
        print(
            f"image: one {args.size_mb} MiB layer; {args.agents} agents; "
            f"links {args.rate_mbit} Mbit/s up and down; ideal S/B = {ideal:.1f}s, "
            f"direct ideal N*S/B = {args.agents * ideal:.1f}s"
        )
        t = run(args.agents, args.size_mb, args.rate_mbit, root)
        print(
            f"{'N':>3} {'direct s':>9} {'mirror s':>9} {'direct/mirror':>14} {'mirror/ideal':>13}"
            f" {'upstream copies':>16}"
        )
        print(
            f"{args.agents:>3} {t['direct']:>9.2f} {t['mirror']:>9.2f} {t['direct'] / t['mirror']:>14.2f}"
            f" {t['mirror'] / ideal:>13.2f} {t['upstream_copies']:>16.2f}",
            flush=True,
        )
    finally:
        swarm.cleanup_all()
        if args.keep:
            print(f"logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
