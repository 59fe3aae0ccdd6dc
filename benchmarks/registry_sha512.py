#!/usr/bin/env python3
"""sha512 push benchmark: what an OCI 1.1 sha512 upload costs on kraken-proxy, beside sha256 and
docker-registry.

A random blob (``--size-mb``) is pushed to a standalone ``kraken-proxy`` and to Debian's
``docker-registry``, each time under a fresh repository, in two ways and with both digests:

- chunked: ``POST``, ``--chunk-mb`` ``PATCH`` requests, a closing ``PUT ?digest=`` (kraken
  hashes chunks with SHA-256 as they arrive; a sha512 digest makes it read the file again),
- one body: ``POST``, then the whole blob with the closing ``PUT ?digest=`` (hashed with the
  algorithm it names as it arrives).

Rounds are interleaved (``--repeat``) and each figure keeps its best. Printed: MB/s, kraken's
sha512 as a ratio of its own sha256 (the cost of the algorithm) and of docker-registry's sha512
(the baseline), all measured in the same run.

    .venv/bin/python benchmarks/registry_sha512.py [--size-mb 100] [--chunk-mb 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.integration.registry_support import DockerRegistry  # noqa: E402
from tests.support import ServerProcess  # noqa: E402


def file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return f"{algo}:{h.hexdigest()}"


def _send(conn: http.client.HTTPConnection, method: str, path: str, body: object = None,
          headers: dict[str, str] | None = None, expect: int = 202) -> str:
    conn.request(method, path, body, headers or {})
    response = conn.getresponse()
    response.read()
    assert response.status == expect, (method, path, response.status)
    return response.headers.get("Location", "")


def push(port: int, repo: str, path: Path, digest: str, chunk: int | None) -> float:
    """MB/s of one push of *path* as *digest*: in *chunk*-byte PATCHes, or with the closing PUT."""
    size = path.stat().st_size
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        location = _send(conn, "POST", f"/v2/{repo}/blobs/uploads/")
        with open(path, "rb") as f:
            if chunk is None:
                body: object = f
                headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
            else:
                offset = 0
                while offset < size:
                    data = f.read(chunk)
                    location = _send(conn, "PATCH", location, data, {
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + len(data) - 1}"})
                    offset += len(data)
                body, headers = None, {}
            sep = "&" if "?" in location else "?"
            _send(conn, "PUT", f"{location}{sep}digest={digest}", body, headers, expect=201)
    finally:
        conn.close()
    return size / (time.perf_counter() - started) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--chunk-mb", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the best is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kraken-sha512-bench-") as tmpdir:
        tmp = Path(tmpdir)
        blob = tmp / "blob"
        with open(blob, "wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(1 << 20))
        digests = {algo: file_digest(blob, algo) for algo in ("sha256", "sha512")}
        reference = DockerRegistry(tmp / "docker-registry")
        proxy = ServerProcess("kraken-proxy", {
            "listen": ["tcp:0:interface=127.0.0.1"],
            "proxy": {"storage": str(tmp / "proxy"), "max_blob_size": 4 * args.size_mb << 20},
        }, tmp / "kraken-proxy", []).start()
        ports = {"kraken": proxy.port("registry"), "docker-registry": reference.port}
        ways: dict[str, int | None] = {"chunked": args.chunk_mb << 20, "one body": None}
        best: dict[tuple[str, str, str], float] = {}

        def measure(target: str, way: str, algo: str, round_: int) -> None:
            repo = f"bench/{way.replace(' ', '-')}-{algo}-{round_}"
            rate = push(ports[target], repo, blob, digests[algo], ways[way])
            key = (target, way, algo)
            best[key] = max(best.get(key, 0.0), rate)

        try:
            for round_ in range(args.repeat):
                for target in ports:
                    for way in ways:
                        for algo in digests:
                            measure(target, way, algo, round_)
        finally:
            proxy.stop()
            reference.stop()
    print(f"push of {args.size_mb} MB ({args.chunk_mb} MB chunks), best of {args.repeat}; MB/s")
    print(f"{'':>8} {'':>7} {'kraken':>8} {'docker-registry':>16} {'kraken/docker':>14}")
    for way in ways:
        for algo in digests:
            k, d = best[("kraken", way, algo)], best[("docker-registry", way, algo)]
            print(f"{way:>8} {algo:>7} {k:8.0f} {d:16.0f} {k / d:13.2f}x")
        k512, k256 = best[("kraken", way, "sha512")], best[("kraken", way, "sha256")]
        print(f"{way:>8} kraken sha512 / sha256: {k512 / k256:.2f}x")


if __name__ == "__main__":
    main()
