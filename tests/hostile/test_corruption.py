"""On-disk corruption of every blob store (origin, agent, proxy), against real twistd processes.

Bytes are flipped in a stored copy as a faulty disk or a stray write would. A request must
then get the right bytes (the store repaired from the backend, the origins or the swarm) or
a clear 404/5xx, never the bad bytes; ``HEAD`` and ``GET`` agree; ``corrupt_blobs`` counts
the quarantined copy. A P2P download from an origin whose copy rotted must not wait for the
no-progress timeout (300 s).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from kraken.core.digest import Digest
from tests.integration.p2p_fixtures import agent_config, origin_config, tracker_config
from tests.integration.registry_http import Registry, Reply
from tests.support import ServerProcess, free_ports, tls_section

NS = "test/corrupt"
MiB = 1024 * 1024


# -- helpers --------------------------------------------------------------------------------------
def https(pki: Path, port: int, method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None, role: str = "client") -> Reply:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / f"{role}.pem"), str(pki / f"{role}.key"))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def plain(port: int, method: str, path: str, timeout: float = 120) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def metric_text(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith("#") and (line.split(" ")[0] == name or line.startswith(name + "{")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def origin_metric(pki: Path, origin: ServerProcess, name: str) -> float:
    return metric_text(https(pki, origin.port("http"), "GET", "/metrics").body.decode(), name)


def plain_metric(port: int, name: str) -> float:
    return metric_text(plain(port, "GET", "/metrics").body.decode(), name)


def stored(store: Path, d: Digest) -> Path:
    """Where a CAStore rooted at *store* keeps the bytes of *d*."""
    return store / "cache" / d.hex[:2] / d.hex[2:4] / d.hex / "data"


def flip(path: Path) -> None:
    """Invert one byte in the middle of *path*, in place, as a faulty write would."""
    flip_at(path, path.stat().st_size // 2)


def flip_at(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def upload_to_origin(pki: Path, origin: ServerProcess, data: bytes, ns: str = NS) -> Digest:
    d = Digest.of_bytes(data)
    port = origin.port("http")
    base = f"/namespace/{ns.replace('/', '%2F')}/blobs/{d}/uploads"
    started = https(pki, port, "POST", base)
    assert started.status == 200, started
    uid = started.json()["uid"]
    patched = https(pki, port, "PATCH", f"{base}/{uid}", data, {"Content-Range": f"0-{len(data)}"})
    assert patched.status == 200, patched
    committed = https(pki, port, "PUT", f"{base}/{uid}")
    assert committed.status == 201, committed
    return d


def origin_get(pki: Path, origin: ServerProcess, d: Digest, ns: str = NS, timeout: float = 60) -> Reply:
    """``GET`` of a blob on the origin, polling while it answers 202 (fetching)."""
    deadline = time.monotonic() + timeout
    while True:
        reply = https(pki, origin.port("http"), "GET", f"/namespace/{ns.replace('/', '%2F')}/blobs/{d}")
        if reply.status != 202 or time.monotonic() > deadline:
            return reply
        time.sleep(0.1)


def start_origin(servers: Any, pki: Path, root: Path, backend: Path | None, **extra: Any) -> ServerProcess:
    return servers.start("kraken-origin", origin_config(pki, root, backend, **extra), name="origin")


def start_proxy(servers: Any, pki: Path, root: Path, origin: ServerProcess) -> ServerProcess:
    return servers.start("kraken-proxy", {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "proxy"),
        "proxy": {"storage": str(root), "origins": [f"127.0.0.1:{origin.port('http')}"]},
    }, name="proxy")


def start_agent(servers: Any, pki: Path, root: Path, tracker: ServerProcess, name: str) -> ServerProcess:
    return servers.start("kraken-agent", agent_config(pki, root, tracker.port("http")), name=name)


# -- proxy ----------------------------------------------------------------------------------------
def test_corrupt_proxy_copy_is_fetched_again_from_the_origin(servers: Any, pki: Path, tmp_path: Path) -> None:
    origin = start_origin(servers, pki, tmp_path / "origin", tmp_path / "backend")
    proxy = start_proxy(servers, pki, tmp_path / "proxy", origin)
    registry = Registry("127.0.0.1", proxy.port())
    data = os.urandom(3 * MiB + 11)
    d = Digest.of_bytes(data)
    assert registry.upload(NS, data, str(d)).status == 201
    copy = stored(tmp_path / "proxy" / "blobs", d)
    flip(copy)

    head = registry.request("HEAD", f"/v2/{NS}/blobs/{d}")
    get = registry.request("GET", f"/v2/{NS}/blobs/{d}")
    assert (head.status, get.status) == (200, 200)
    assert head.header("Content-Length") == str(len(data))
    assert get.body == data
    assert sha256_of(copy) == d.hex  # fetched again from the origin
    assert (tmp_path / "proxy" / "blobs" / "quarantine" / d.hex / "data").exists()
    assert plain_metric(proxy.port(), "kraken_proxy_corrupt_blobs_total") == 1
    again = registry.request("GET", f"/v2/{NS}/blobs/{d}", headers={"Range": "bytes=0-9"})
    assert (again.status, again.body) == (206, data[:10])
    assert plain_metric(proxy.port(), "kraken_proxy_corrupt_blobs_total") == 1


def test_corrupt_proxy_copy_without_origins_is_unknown(servers: Any, pki: Path, tmp_path: Path) -> None:
    proxy = servers.start("kraken-proxy", {
        "listen": ["tcp:0:interface=127.0.0.1"], "proxy": {"storage": str(tmp_path / "proxy")},
    }, name="proxy")
    registry = Registry("127.0.0.1", proxy.port())
    data = os.urandom(MiB)
    d = Digest.of_bytes(data)
    assert registry.upload(NS, data, str(d)).status == 201
    flip(stored(tmp_path / "proxy" / "blobs", d))
    get = registry.request("GET", f"/v2/{NS}/blobs/{d}")
    head = registry.request("HEAD", f"/v2/{NS}/blobs/{d}")
    assert (get.status, head.status) == (404, 404)
    assert get.error_codes() == ["BLOB_UNKNOWN"]
    assert plain_metric(proxy.port(), "kraken_proxy_corrupt_blobs_total") == 1
    assert registry.upload(NS, data, str(d)).status == 201  # pushed again: stored again
    assert registry.request("GET", f"/v2/{NS}/blobs/{d}").body == data


def test_a_new_push_replaces_a_corrupt_proxy_copy(servers: Any, pki: Path, tmp_path: Path) -> None:
    origin = start_origin(servers, pki, tmp_path / "origin", None)
    proxy = start_proxy(servers, pki, tmp_path / "proxy", origin)
    registry = Registry("127.0.0.1", proxy.port())
    data = os.urandom(MiB + 3)
    d = Digest.of_bytes(data)
    assert registry.upload(NS, data, str(d)).status == 201
    flip(stored(tmp_path / "proxy" / "blobs", d))
    assert registry.upload(NS, data, str(d)).status == 201  # not pushed to the origin from the bad copy
    assert sha256_of(stored(tmp_path / "proxy" / "blobs", d)) == d.hex
    assert registry.request("GET", f"/v2/{NS}/blobs/{d}").body == data


# -- origin ---------------------------------------------------------------------------------------
def test_corrupt_origin_copy_is_repaired_from_the_backend(servers: Any, pki: Path, tmp_path: Path) -> None:
    backend = tmp_path / "backend"
    origin = start_origin(servers, pki, tmp_path / "origin", backend)
    proxy = start_proxy(servers, pki, tmp_path / "proxy", origin)
    registry = Registry("127.0.0.1", proxy.port())
    data = os.urandom(3 * MiB + 5)
    d = Digest.of_bytes(data)
    assert registry.upload(NS, data, str(d)).status == 201
    wait_for(lambda: (backend / d.hex).exists(), what="the write-back")
    copy = stored(tmp_path / "origin" / "store", d)
    flip(copy)
    # the proxy no longer has it either: its reads go to the origin
    (tmp_path / "proxy" / "blobs" / "cache" / d.hex[:2] / d.hex[2:4] / d.hex / "data").unlink()

    head = registry.request("HEAD", f"/v2/{NS}/blobs/{d}")
    get = registry.request("GET", f"/v2/{NS}/blobs/{d}")
    assert (head.status, get.status) == (200, 200)
    assert get.body == data
    direct = origin_get(pki, origin, d)
    assert (direct.status, direct.body) == (200, data)
    assert sha256_of(copy) == d.hex
    assert (tmp_path / "origin" / "store" / "quarantine" / d.hex / "data").exists()
    assert origin_metric(pki, origin, "kraken_origin_corrupt_blobs_total") == 1


def test_corrupt_origin_copy_without_backend_head_and_get_agree(
    servers: Any, pki: Path, tmp_path: Path
) -> None:
    origin = start_origin(servers, pki, tmp_path / "origin", None)
    proxy = start_proxy(servers, pki, tmp_path / "proxy", origin)
    registry = Registry("127.0.0.1", proxy.port())
    data = os.urandom(2 * MiB)
    d = Digest.of_bytes(data)
    assert registry.upload(NS, data, str(d)).status == 201
    flip(stored(tmp_path / "origin" / "store", d))
    stored(tmp_path / "proxy" / "blobs", d).unlink()

    head = registry.request("HEAD", f"/v2/{NS}/blobs/{d}")
    get = registry.request("GET", f"/v2/{NS}/blobs/{d}")
    assert (head.status, get.status) == (404, 404), (head, get)
    assert get.body != data and data[:4096] not in get.body
    port = origin.port("http")
    stat = https(pki, port, "HEAD", f"/internal/namespace/{NS.replace('/', '%2F')}/blobs/{d}")
    direct = origin_get(pki, origin, d)
    assert (stat.status, direct.status) == (404, 404)
    assert origin_metric(pki, origin, "kraken_origin_corrupt_blobs_total") == 1

    # a new push repairs it: the corrupt copy no longer counts as "already stored"
    assert registry.upload(NS, data, str(d)).status == 201
    assert origin_get(pki, origin, d).body == data


def test_corrupt_origin_copy_is_repaired_from_another_owner(servers: Any, pki: Path, tmp_path: Path) -> None:
    ports = free_ports(2)
    cluster = [f"127.0.0.1:{port}" for port in ports]
    origins = []
    for name, port in zip(("a", "b"), ports):
        config = origin_config(pki, tmp_path / name, None, cluster=cluster, self_address=f"127.0.0.1:{port}",
                               max_replica=2)
        config["listen"] = [f"tls:tcp:{port}:interface=127.0.0.1"]
        origins.append(servers.start("kraken-origin", config, name=f"origin-{name}"))
    data = os.urandom(3 * MiB + 1)
    d = upload_to_origin(pki, origins[0], data)
    wait_for(lambda: stored(tmp_path / "b" / "store", d).exists(), what="the copy to the other owner")
    copy = stored(tmp_path / "a" / "store", d)
    flip(copy)

    reply = origin_get(pki, origins[0], d)
    assert (reply.status, reply.body) == (200, data)
    assert sha256_of(copy) == d.hex
    assert origin_metric(pki, origins[0], "kraken_origin_corrupt_blobs_total") == 1
    assert origin_metric(pki, origins[1], "kraken_origin_corrupt_blobs_total") == 0


# -- agent and P2P --------------------------------------------------------------------------------
def p2p_cluster(servers: Any, pki: Path, tmp_path: Path) -> tuple[ServerProcess, ServerProcess, Path]:
    backend = tmp_path / "backend"
    origin = start_origin(servers, pki, tmp_path / "origin", backend)
    tracker = servers.start("kraken-tracker", tracker_config(pki, origin.port("http")), name="tracker")
    return origin, tracker, backend


def agent_get(agent: ServerProcess, d: Digest, ns: str = NS) -> Reply:
    return plain(agent.port("http"), "GET", f"/namespace/{ns.replace('/', '%2F')}/blobs/{d}")


def test_corrupt_agent_copy_is_downloaded_again(servers: Any, pki: Path, tmp_path: Path) -> None:
    origin, tracker, _ = p2p_cluster(servers, pki, tmp_path)
    agent = start_agent(servers, pki, tmp_path / "a0", tracker, "a0")
    data = os.urandom(4 * MiB + 3)
    d = upload_to_origin(pki, origin, data)
    first = agent_get(agent, d)
    assert (first.status, first.body) == (200, data)
    copy = stored(tmp_path / "a0" / "store", d)
    flip(copy)

    again = agent_get(agent, d)
    assert (again.status, again.body) == (200, data)
    assert sha256_of(copy) == d.hex
    assert (tmp_path / "a0" / "store" / "quarantine" / d.hex / "data").exists()
    assert plain_metric(agent.port("http"), "kraken_agent_corrupt_blobs_total") == 1


def test_p2p_download_from_a_corrupt_origin_copy_does_not_stall(
    servers: Any, pki: Path, tmp_path: Path
) -> None:
    origin, tracker, backend = p2p_cluster(servers, pki, tmp_path)
    data = os.urandom(4 * MiB + 3)
    d = upload_to_origin(pki, origin, data)
    wait_for(lambda: (backend / d.hex).exists(), what="the write-back")
    flip(stored(tmp_path / "origin" / "store", d))
    agent = start_agent(servers, pki, tmp_path / "a0", tracker, "a0")

    started = time.monotonic()
    reply = agent_get(agent, d)
    assert (reply.status, reply.body) == (200, data)
    assert time.monotonic() - started < 60
    assert sha256_of(stored(tmp_path / "origin" / "store", d)) == d.hex
    assert origin_metric(pki, origin, "kraken_origin_corrupt_blobs_total") == 1


def test_seeding_origin_stops_offering_pieces_that_went_bad(servers: Any, pki: Path, tmp_path: Path) -> None:
    origin, tracker, backend = p2p_cluster(servers, pki, tmp_path)
    data = os.urandom(6 * MiB)
    d = upload_to_origin(pki, origin, data)
    wait_for(lambda: (backend / d.hex).exists(), what="the write-back")
    first = start_agent(servers, pki, tmp_path / "a0", tracker, "a0")
    assert agent_get(first, d).body == data  # the origin now seeds the blob from an open torrent
    first.kill()  # so the next agent can only get it from the origin
    flip(stored(tmp_path / "origin" / "store", d))
    second = start_agent(servers, pki, tmp_path / "a1", tracker, "a1")

    started = time.monotonic()
    reply = agent_get(second, d)
    assert (reply.status, reply.body) == (200, data)
    assert time.monotonic() - started < 60
    assert origin_metric(pki, origin, "kraken_origin_corrupt_blobs_total") == 1
    assert "a piece failed its hash while seeding" in origin.log()
    assert plain_metric(second.port("http"), "kraken_agent_pieces_corrupt_total") == 0


def test_a_resumed_agent_download_fetches_pieces_that_rotted_again(
    servers: Any, pki: Path, tmp_path: Path
) -> None:
    backend = tmp_path / "backend"
    config = origin_config(pki, tmp_path / "origin", backend)
    config["bandwidth"] = {"egress_bits_per_sec": 16_000_000}  # about 2 MB/s: the download takes a while
    origin = servers.start("kraken-origin", config, name="origin")
    tracker = servers.start("kraken-tracker", tracker_config(pki, origin.port("http")), name="tracker")
    data = os.urandom(10 * MiB)
    d = upload_to_origin(pki, origin, data)
    agent_cfg = agent_config(pki, tmp_path / "a0", tracker.port("http"))
    agent = servers.start("kraken-agent", agent_cfg, name="a0")
    status = tmp_path / "a0" / "store" / "download" / d.hex / "status"
    downloading = threading.Thread(target=lambda: _ignore_errors(agent_get, agent, d), daemon=True)
    downloading.start()
    wait_for(lambda: status.exists() and status.read_bytes().count(1) >= 2, what="some pieces on disk")
    agent.kill()
    have = [i for i, b in enumerate(status.read_bytes()) if b == 1]
    assert 0 < len(have) < 10
    flip_at(status.with_name("data"), have[0] * MiB + 100)

    restarted = servers.start("kraken-agent", agent_cfg, name="a0-again")
    reply = agent_get(restarted, d)
    assert (reply.status, reply.body) == (200, data)
    assert "failed their hash and are fetched again" in restarted.log()


def _ignore_errors(f: Any, *args: Any) -> None:
    try:
        f(*args)
    except OSError:
        pass
