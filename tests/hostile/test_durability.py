"""kill -9 right after every acknowledged write, and on-disk corruption of every non-blob store.

Real twistd processes: each test acknowledges a write, kills the server at once (no shutdown
code runs), restarts it and finds the write. A kill -9 keeps what reached the page cache; what
a power cut would also need (fsync of the data and of the directory entries) is checked by
watching the syscalls (`test_ingest_syncs_the_blob_and_every_directory_entry`).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from kraken.core.cas import CAStore
from kraken.core.digest import Digest
from tests.hostile.rig import https
from tests.integration.p2p_fixtures import origin_config
from tests.support import ServerProcess, free_ports


def request(pki: Path, port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, role: str = "client") -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=https(pki, role), timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


# -- kraken-origin: a committed upload, a replica's copy, a pending write-back -------------------

def test_ingest_syncs_the_blob_and_every_directory_entry(tmp_path: Path, monkeypatch: Any) -> None:
    cas = CAStore(tmp_path / "store")
    data = os.urandom(10_000)
    d = Digest.of_bytes(data)
    src = cas.temp_path()
    src.write_bytes(data)
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    final = cas.ingest(src, d)
    assert synced[0] == str(src), "the data before it is renamed into place"
    entry = final.parent
    for directory in (entry, entry.parent, entry.parent.parent, cas.cache_dir):
        assert str(directory) in synced[1:], f"{directory} not synced: {synced}"

    synced.clear()
    other = cas.temp_path()
    other.write_bytes(b"a cache copy")
    cas.ingest(other, Digest.of_bytes(b"a cache copy"), durable=False)
    assert synced == []


def upload_to_origin(pki: Path, port: int, data: bytes, ns: str | None, role: str = "client") -> Digest:
    d = Digest.of_bytes(data)
    base = f"/namespace/{ns}/blobs/{d}/uploads" if ns else f"/internal/blobs/{d}/uploads"
    status, body = request(pki, port, "POST", base, role=role)
    assert status == 200, body
    uid = json.loads(body)["uid"]
    status, body = request(pki, port, "PATCH", f"{base}/{uid}", data,
                           {"Content-Range": f"0-{len(data)}"}, role=role)
    assert status == 200, body
    status, body = request(pki, port, "PUT", f"{base}/{uid}", role=role)
    assert status == 201, body
    return d


def test_origin_commit_and_replica_copy_survive_kill_9(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    backend = tmp_path / "backend"
    backend.mkdir()
    ports = free_ports(2)
    cluster = [f"127.0.0.1:{p}" for p in ports]
    origins = []
    for name, port in zip(("a", "b"), ports):
        config = origin_config(pki, tmp_path / name, backend, cluster=cluster, max_replica=2,
                               self_address=f"127.0.0.1:{port}", writeback_retry_first=0.1,
                               writeback_retry_cap=0.2)
        config["listen"] = [f"tls:tcp:{port}:interface=127.0.0.1"]
        origins.append(servers.start("kraken-origin", config, name=f"origin-{name}"))
    a, b = origins
    for i in range(3):
        # a client's upload: stored, its write-back journaled (the backend refuses it for now)
        data = os.urandom(1024 * 1024 + i)
        d = Digest.of_bytes(data)
        squatter = backend / d.hex / "in-the-way"
        squatter.mkdir(parents=True)
        assert upload_to_origin(pki, ports[0], data, "team") == d
        a.kill()
        a.start()
        status, body = request(pki, ports[0], "GET", f"/namespace/team/blobs/{d}")
        assert status == 200 and body == data, (status, a.log()[-2000:])
        shutil.rmtree(squatter.parent)
        for _ in range(100):
            if (backend / d.hex).is_file():
                break
            time.sleep(0.05)
        assert (backend / d.hex).read_bytes() == data, "the write-back resumed after the kill"

        # what replication sends to the other owner: the copy is there after kill -9
        copy = os.urandom(512 * 1024 + i)
        c = upload_to_origin(pki, ports[1], copy, None, role="origin")
        b.kill()
        b.start()
        status, body = request(pki, ports[1], "HEAD", f"/internal/namespace/team/blobs/{c}?local=true")
        assert status == 200, b.log()[-2000:]
        status, body = request(pki, ports[1], "GET", f"/namespace/team/blobs/{c}")
        assert status == 200 and hashlib.sha256(body).hexdigest() == c.hex


@pytest.mark.parametrize("garbage", [b"", b"{\"namespace\": \"team\", \"dig", b"\x00\xff" * 40],
                         ids=["empty", "truncated", "binary"])
def test_a_garbled_write_back_marker_is_set_aside_and_the_others_run(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool, garbage: bytes
) -> None:
    backend = tmp_path / "backend"
    backend.mkdir()
    config = origin_config(pki, tmp_path / "o", backend, writeback_retry_first=0.1, writeback_retry_cap=0.2)
    origin = servers.start("kraken-origin", config, name="origin")
    port = origin.port("http")
    good = [os.urandom(100_000 + i) for i in range(2)]
    digests = []
    for data in good:
        d = Digest.of_bytes(data)
        (backend / d.hex / "in-the-way").mkdir(parents=True)
        digests.append(upload_to_origin(pki, port, data, "team"))
    origin.kill()
    markers = sorted((tmp_path / "o" / "store" / "writeback").glob("*.json"))
    assert len(markers) == 2
    markers[0].write_bytes(garbage)
    for d in digests:
        shutil.rmtree(backend / d.hex)
    origin.start()
    survivor = next(d for d in digests if markers[1].name.startswith(d.hex))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (backend / survivor.hex).is_file():
        time.sleep(0.05)
    assert (backend / survivor.hex).is_file(), origin.log()[-2000:]
    aside = markers[0].with_suffix(".bad")
    assert aside.read_bytes() == garbage
    assert str(aside) in origin.log()
    status, body = request(pki, origin.port("http"), "GET", "/metrics")
    assert metric(body.decode(), 'kraken_origin_corrupt_entries_total{store="writeback"}') == 1
