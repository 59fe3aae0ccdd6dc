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
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from twisted.internet.defer import Deferred

from kraken.core.cas import CAStore
from kraken.core.digest import Digest
from kraken.core.journal import Journal, read_rows
from kraken.registry.tagstore import TagStore
from tests.hostile.rig import https
from tests.integration.p2p_fixtures import origin_config
from tests.integration.pipeline_http import Http
from tests.integration.registry_http import Registry
from tests.integration.registry_support import proxy_config
from tests.integration.state_rig import state_config
from tests.support import ServerProcess, free_ports, run_twistd, tls_section

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


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


def test_an_acknowledged_origin_patch_survives_kill_9(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    origin = servers.start("kraken-origin", origin_config(pki, tmp_path / "o"), name="origin")
    data = os.urandom(700_000)
    d = Digest.of_bytes(data)
    base = f"/namespace/team/blobs/{d}/uploads"
    status, body = request(pki, origin.port("http"), "POST", base)
    assert status == 200, body
    uid = json.loads(body)["uid"]
    for start, end in ((0, 300_000), (300_000, 700_000)):
        status, body = request(pki, origin.port("http"), "PATCH", f"{base}/{uid}", data[start:end],
                               {"Content-Range": f"{start}-{end}"})
        assert status == 200, body
        origin.kill()
        origin.start()
    status, body = request(pki, origin.port("http"), "PUT", f"{base}/{uid}")
    assert status == 201, body
    assert request(pki, origin.port("http"), "GET", f"/namespace/team/blobs/{d}") == (200, data)


def test_copies_to_the_other_owner_cut_off_by_kill_9_are_made_at_the_next_start(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    ports = free_ports(2)
    cluster = [f"127.0.0.1:{p}" for p in ports]
    configs = []
    for name, port in zip(("a", "b"), ports):
        config = origin_config(pki, tmp_path / name, cluster=cluster, max_replica=2,
                               self_address=f"127.0.0.1:{port}")
        config["listen"] = [f"tls:tcp:{port}:interface=127.0.0.1"]
        configs.append(config)
    a = servers.start("kraken-origin", configs[0], name="origin-a")
    data = os.urandom(300_000)
    d = upload_to_origin(pki, ports[0], data, "team")  # the other owner is down: its copy waits
    a.kill()
    journal = tmp_path / "a" / "store" / "journal.sqlite"
    assert [r.payload for r in read_rows(journal) if r.queue == "replication"] == [
        {"digest": str(d), "owner": cluster[1]}]
    servers.start("kraken-origin", configs[1], name="origin-b")
    a.start()
    deadline = time.monotonic() + 10
    url = f"/internal/namespace/team/blobs/{d}?local=true"
    while time.monotonic() < deadline and read_rows(journal):  # gone once the copy landed
        time.sleep(0.1)
    assert request(pki, ports[1], "HEAD", url)[0] == 200, a.log()[-2000:]
    assert read_rows(journal) == []


@pytest.mark.parametrize("how", ["garbage", "truncated", "flipped"])
def test_a_damaged_journal_stops_the_origin_and_build_index_with_one_line(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool, how: str
) -> None:
    from twisted.internet.task import Clock

    origin = origin_config(pki, tmp_path / "o")
    index = {"listen": ["tls:tcp:0:interface=127.0.0.1"], "tls": tls_section(pki, "build-index"),
             "buildindex": {"storage": str(tmp_path / "bi"), "cluster": ["127.0.0.1:9"]}}
    for plugin, config, db in (("kraken-origin", origin, tmp_path / "o" / "store" / "journal.sqlite"),
                               ("kraken-build-index", index, tmp_path / "bi" / "journal.sqlite")):
        journal = Journal(db, Clock())
        journal.queue("writeback", lambda p: Deferred()).add_many(
            (f"{i:064x}/team", {"namespace": "team", "digest": f"sha256:{i:064x}"}) for i in range(40))
        journal.close()
        damage(db, how)
        config_file = tmp_path / f"{plugin}.yaml"
        config_file.write_text(json.dumps(config))
        result = run_twistd(plugin, "--config", str(config_file), timeout=60)
        assert result.returncode != 0
        output = (result.stdout + result.stderr).strip().splitlines()
        assert "Traceback" not in result.stderr + result.stdout, result.stderr
        assert len(output) == 1 and str(db) in output[0] and plugin in output[0], output


# -- tags: kraken-build-index, kraken-proxy (local tags and with a build-index) ------------------

def push_image(reg: Registry, name: str, tag: str, seed: int) -> str:
    """Push a config and a layer, then the manifest under *tag* (201); its digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = os.urandom(2000 + seed)
    for blob in (config, layer):
        put = reg.upload(name, blob, "sha256:" + hashlib.sha256(blob).hexdigest())
        assert put.status == 201, (put.status, put.body)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + hashlib.sha256(layer).hexdigest(), "size": len(layer)}],
    }).encode()
    put = reg.put_manifest(name, tag, manifest, OCI_MANIFEST)
    assert put.status == 201, (put.status, put.body)
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def pulled_digest(reg: Registry, name: str, tag: str) -> str | None:
    got = reg.request("GET", f"/v2/{name}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    if got.status != 200:
        return None
    return "sha256:" + hashlib.sha256(got.body).hexdigest()


def build_index(servers: ServerProcess.Pool, pki: Path, root: Path, port: int, **section: Any
                ) -> ServerProcess:
    return servers.start("kraken-build-index", {
        "listen": [f"tls:tcp:{port}:interface=127.0.0.1"],
        "tls": tls_section(pki, "build-index"),
        "buildindex": {"storage": str(root), **section},
    }, name="build-index")


def tag_path(tag: str, digest: str = "") -> str:
    return f"/tags/{quote(tag, safe='')}" + (f"/digest/{digest}" if digest else "")


def test_build_index_tag_put_survives_kill_9(pki: Path, tmp_path: Path, servers: ServerProcess.Pool) -> None:
    port = free_ports(1)[0]
    index = build_index(servers, pki, tmp_path / "bi", port)
    for i in range(3):
        digest = str(Digest.of_bytes(b"manifest %d" % i))
        status, body = request(pki, port, "PUT", tag_path(f"team/app:v{i}", digest))
        assert status == 200, body
        index.kill()
        index.start()
        status, body = request(pki, port, "GET", tag_path(f"team/app:v{i}"))
        assert (status, body.decode()) == (200, digest), index.log()[-2000:]


def test_tag_put_syncs_the_file_and_the_directories_it_created(tmp_path: Path, monkeypatch: Any) -> None:
    store = TagStore(tmp_path / "tags")
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    store.put("team/app", "v1", str(Digest.of_bytes(b"m")))
    tags = tmp_path / "tags" / "team" / "app" / "_tags"
    assert any(s.startswith(str(tags / ".v1.")) for s in synced), synced  # the data, before its rename
    for directory in (tags, tags.parent, tags.parent.parent, tmp_path / "tags"):
        assert str(directory) in synced, (directory, synced)


GARBLED_TAGS = {"empty": b"", "truncated": b"sha256:0123456789abcdef", "binary": b"\x00\xff\xfe" * 30}


@pytest.mark.parametrize("garbage", GARBLED_TAGS.values(), ids=GARBLED_TAGS.keys())
def test_a_garbled_tag_file_reads_as_absent_and_is_reported_once(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool, garbage: bytes
) -> None:
    backend = tmp_path / "backend"
    port = free_ports(1)[0]
    index = build_index(servers, pki, tmp_path / "bi", port, backend={"type": "fs", "root": str(backend)})
    digests = {tag: str(Digest.of_bytes(tag.encode())) for tag in ("team/app:good", "team/app:bad")}
    for tag, digest in digests.items():
        assert request(pki, port, "PUT", tag_path(tag, digest))[0] == 200
    index.kill()
    damaged = tmp_path / "bi" / "tags" / "team" / "app" / "_tags" / "bad"
    damaged.write_bytes(garbage)
    shutil.rmtree(backend)  # no copy to repair from: the bad tag is gone, the good one stays
    index.start()
    assert request(pki, port, "GET", tag_path("team/app:good")) == (200, digests["team/app:good"].encode())
    for _ in range(2):
        assert request(pki, port, "GET", tag_path("team/app:bad"))[0] == 404
    assert len([line for line in index.log().splitlines() if str(damaged) in line]) == 1
    body = request(pki, port, "GET", "/metrics")[1]
    assert metric(body.decode(), 'kraken_build_index_corrupt_entries_total{store="tags"}') == 1
    # pushed again, the tag is whole again
    assert request(pki, port, "PUT", tag_path("team/app:bad", digests["team/app:bad"]))[0] == 200
    assert request(pki, port, "GET", tag_path("team/app:bad")) == (200, digests["team/app:bad"].encode())


def test_build_index_repairs_a_garbled_tag_from_its_backend(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    port = free_ports(1)[0]
    index = build_index(servers, pki, tmp_path / "bi", port,
                        backend={"type": "fs", "root": str(tmp_path / "backend")})
    digest = str(Digest.of_bytes(b"manifest"))
    assert request(pki, port, "PUT", tag_path("team/app:v1", digest))[0] == 200
    index.kill()
    damaged = tmp_path / "bi" / "tags" / "team" / "app" / "_tags" / "v1"
    damaged.write_bytes(digest[:20].encode())
    index.start()
    assert request(pki, port, "GET", tag_path("team/app:v1")) == (200, digest.encode())
    assert damaged.read_text() == digest


def test_a_pending_copy_to_a_neighbour_survives_kill_9(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    port_a, port_b = free_ports(2)
    a = servers.start("kraken-build-index", {
        "listen": [f"tls:tcp:{port_a}:interface=127.0.0.1"], "tls": tls_section(pki, "build-index"),
        "buildindex": {"storage": str(tmp_path / "a"), "cluster": [f"127.0.0.1:{port_b}"]},
    }, name="build-index-a")
    digest = str(Digest.of_bytes(b"manifest"))
    assert request(pki, port_a, "PUT", tag_path("team/app:v1", digest))[0] == 200  # the neighbour is down
    a.kill()
    journal = tmp_path / "a" / "journal.sqlite"
    assert [r.queue for r in read_rows(journal)] == ["tag_copies"]
    build_index(servers, pki, tmp_path / "b", port_b)
    a.start()
    deadline = time.monotonic() + 10
    while request(pki, port_b, "GET", tag_path("team/app:v1"))[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert request(pki, port_b, "GET", tag_path("team/app:v1")) == (200, digest.encode()), a.log()[-2000:]
    assert read_rows(journal) == []


def test_proxy_manifest_put_survives_kill_9_with_local_tags(
    tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    proxy = servers.start("kraken-proxy", {
        "listen": ["tcp:0:interface=127.0.0.1"], "proxy": {"storage": str(tmp_path / "proxy")},
    }, name="proxy")
    for i in range(3):
        digest = push_image(Registry("127.0.0.1", proxy.port("registry")), "team/app", f"v{i}", i)
        proxy.kill()
        proxy.start()
        reg = Registry("127.0.0.1", proxy.port("registry"))
        assert pulled_digest(reg, "team/app", f"v{i}") == digest, proxy.log()[-2000:]
        assert pulled_digest(reg, "team/app", digest) == digest

    # a garbled tag file: that tag is unknown and reported once; the others stay
    proxy.kill()
    damaged = tmp_path / "proxy" / "tags" / "team" / "app" / "_tags" / "v1"
    damaged.write_bytes(b"sha256:00")
    proxy.start()
    reg = Registry("127.0.0.1", proxy.port("registry"))
    assert pulled_digest(reg, "team/app", "v1") is None
    assert pulled_digest(reg, "team/app", "v0") is not None
    assert pulled_digest(reg, "team/app", "v2") is not None
    assert sum(str(damaged) in line for line in proxy.log().splitlines()) == 1
    text = reg.request("GET", "/metrics").body.decode()
    assert metric(text, 'kraken_proxy_corrupt_entries_total{store="tags"}') == 1


def test_proxy_manifest_put_survives_kill_9_of_every_server_with_a_build_index(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    origin_port, index_port = free_ports(2)
    config = origin_config(pki, tmp_path / "o")
    config["listen"] = [f"tls:tcp:{origin_port}:interface=127.0.0.1"]
    origin = servers.start("kraken-origin", config, name="origin")
    index = build_index(servers, pki, tmp_path / "bi", index_port, origins=[f"127.0.0.1:{origin_port}"])
    proxy = servers.start("kraken-proxy", proxy_config(pki, tmp_path / "p", origin_port, index_port),
                          name="proxy")
    for i in range(2):
        digest = push_image(Registry("127.0.0.1", proxy.port("registry")), "team/app", f"v{i}", i)
        for server in (proxy, index, origin):
            server.kill()
        shutil.rmtree(tmp_path / "p")  # nothing cached: the tag and the manifest come from the cluster
        for server in (origin, index, proxy):
            server.start()
        reg = Registry("127.0.0.1", proxy.port("registry"))
        assert pulled_digest(reg, "team/app", f"v{i}") == digest, proxy.log()[-2000:]


# -- kraken-pipeline definitions; damaged SQLite files (pipeline, state) -------------------------

def lambda_service(name: str) -> dict[str, Any]:
    return {"name": name, "client": {"module": "octopus.lambda", "start": {"module": "SimpleMath"}},
            "interface": {"add": {"call": {"function": "add"}}}}


def stage(name: str) -> dict[str, Any]:
    return {"name": name, "components": [{"type": "stage", "transform": {"out": "args['n'] + 1"}}]}


def pipeline_server(servers: ServerProcess.Pool, db: Path) -> ServerProcess:
    return servers.start("kraken-pipeline", {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "pipeline": {"persist": True, "database": str(db)},
    }, name="pipeline")


def test_pipeline_definitions_survive_kill_9(tmp_path: Path, servers: ServerProcess.Pool) -> None:
    server = pipeline_server(servers, tmp_path / "defs.sqlite")

    def then_kill(method: str, path: str, body: Any = None) -> Http:
        Http(server.port("http")).ok(method, path, body)
        server.kill()
        server.start()
        return Http(server.port("http"))

    for i in range(2):
        api = then_kill("POST", "/services/define", lambda_service(f"math{i}"))
        assert f"math{i}" in api.ok("GET", "/services"), server.log()[-2000:]
        api = then_kill("POST", f"/services/start/math{i}")
        assert api.ok("GET", f"/services/status/math{i}")["status"] == ":ready"
        api = then_kill("POST", "/pipelines/define", stage(f"inc{i}"))
        assert f"inc{i}" in api.ok("GET", "/pipelines")
        api = then_kill("POST", f"/pipelines/start/inc{i}")
        assert api.ok("POST", f"/pipelines/call/inc{i}", {"n": 1})["out"] == 2
        api = then_kill("POST", "/routes/define", {f"event{i}": f"inc{i}"})
        assert api.ok("GET", "/routes") == {f"event{i}": f"inc{i}"}


def test_an_unreadable_pipeline_row_is_skipped_and_counted(
    tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    db = tmp_path / "defs.sqlite"
    server = pipeline_server(servers, db)
    api = Http(server.port("http"))
    for name in ("good", "bad"):
        api.ok("POST", "/pipelines/define", stage(name))
    server.kill()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE definitions SET body = '{\"name\": \"bad\", \"compo' WHERE key LIKE '%bad%'")
    server.start()
    api = Http(server.port("http"))
    assert api.ok("GET", "/pipelines") == ["good"], server.log()[-2000:]
    assert "skipping stored pipeline" in server.log()
    text = Http(server.port("http")).get("/metrics").raw.decode()
    assert metric(text, 'kraken_pipeline_corrupt_entries_total{store="definitions"}') == 1


DAMAGES = {
    "garbage": lambda raw: b"this is not a database " * 100,
    "truncated": lambda raw: raw[: len(raw) // 3 + 100],
    "flipped": lambda raw: raw[:4106] + bytes(b ^ 0xFF for b in raw[4106:4496]) + raw[4496:],  # page 2
}


def damage(path: Path, how: str) -> None:
    for suffix in ("-wal", "-shm"):  # checkpointed at the clean stop: the main file holds it all
        assert not Path(f"{path}{suffix}").exists() or Path(f"{path}{suffix}").stat().st_size == 0
    path.write_bytes(DAMAGES[how](path.read_bytes()))


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_database_stops_the_start_with_one_line(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool, how: str
) -> None:
    state = servers.start("kraken-state", state_config(pki, tmp_path / "st", freeze=True), name="state")
    for i in range(40):
        nid = f"eeeeeeee-0000-0000-0000-{i:012d}"
        body = json.dumps({"id": nid, "nodename": "n" * 200}).encode()
        assert request(pki, state.port("http"), "POST", "/cfg/node", body,
                       {"Content-Type": "application/json"})[0] == 201
    state.stop()
    pipeline = pipeline_server(servers, tmp_path / "defs.sqlite")
    for i in range(40):
        Http(pipeline.port("http")).ok("POST", "/pipelines/define", stage(f"p{i}" + "x" * 100))
    pipeline.stop()

    for proc, db in ((state, tmp_path / "st" / "cfg.sqlite"), (pipeline, tmp_path / "defs.sqlite")):
        damage(db, how)
        result = run_twistd(proc.plugin, "--config", str(proc.config_file), timeout=60)
        assert result.returncode != 0
        output = (result.stdout + result.stderr).strip().splitlines()
        assert "Traceback" not in result.stderr + result.stdout, result.stderr
        assert len(output) == 1 and str(db) in output[0] and proc.plugin in output[0], output


# -- kraken-proxy upload-session journals ---------------------------------------------------------

def test_garbled_upload_journals_are_reported_and_the_good_sessions_resume(
    tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    proxy = servers.start("kraken-proxy", {
        "listen": ["tcp:0:interface=127.0.0.1"], "proxy": {"storage": str(tmp_path / "proxy")},
    }, name="proxy")
    reg = Registry("127.0.0.1", proxy.port("registry"))
    chunks = [b"a" * 5000, b"b" * 7000]
    locations = {}
    for name in ("intact", "bad-line", "bad-header"):
        start = reg.request("POST", f"/v2/team/{name}/blobs/uploads/")
        assert start.status == 202
        location = start.header("Location")
        assert location
        offset = 0
        for chunk in chunks:
            patched = reg.request("PATCH", location, chunk, {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(chunk) - 1}"})
            assert patched.status == 202, patched.body
            offset += len(chunk)
        locations[name] = location
    proxy.kill()

    uploads = tmp_path / "proxy" / "uploads"
    journals = {name: next(p for p in uploads.glob("*.session") if p.stem in location)
                for name, location in locations.items()}
    lines = journals["bad-line"].read_bytes().split(b"\n")
    journals["bad-line"].write_bytes(b"\n".join([lines[0], b"5\x00\xff0 garbage", *lines[2:]]))
    journals["bad-header"].write_bytes(b'{"id": "' + journals["bad-header"].read_bytes()[8:40])
    proxy.start()
    reg = Registry("127.0.0.1", proxy.port("registry"))
    whole = b"".join(chunks)
    for name in ("intact", "bad-line"):  # both resume where their last good line says
        status = reg.request("GET", locations[name])
        assert status.status == 204 and status.header("Range") == f"0-{len(whole) - 1}", (name, proxy.log())
        digest = "sha256:" + hashlib.sha256(whole).hexdigest()
        assert reg.request("PUT", f"{locations[name]}?digest={digest}").status == 201
    assert reg.request("GET", locations["bad-header"]).status == 404
    log = proxy.log()
    assert str(journals["bad-line"]) in log and str(journals["bad-header"]) in log
    text = reg.request("GET", "/metrics").body.decode()
    assert metric(text, 'kraken_proxy_corrupt_entries_total{store="upload_sessions"}') == 2


def test_an_unreadable_state_row_is_skipped_and_counted(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    state = servers.start("kraken-state", state_config(pki, tmp_path, freeze=True), name="state")
    ids = [f"eeeeeeee-0000-0000-0000-{i:012d}" for i in range(3)]
    for nid in ids:
        body = json.dumps({"id": nid, "nodename": "n"}).encode()
        assert request(pki, state.port("http"), "POST", "/cfg/node", body,
                       {"Content-Type": "application/json"})[0] == 201
    state.kill()
    with sqlite3.connect(tmp_path / "cfg.sqlite") as conn:
        conn.execute("UPDATE cfg SET node = '{\"id\": [' WHERE id = ?", (ids[1],))
    state.start()
    port = state.port("http")
    assert request(pki, port, "GET", f"/cfg/node/{ids[1]}")[0] == 404
    for nid in (ids[0], ids[2]):
        assert request(pki, port, "GET", f"/cfg/node/{nid}")[0] == 200
    assert any(ids[1] in line and "skipping" in line for line in state.log().splitlines())
    text = request(pki, port, "GET", "/metrics")[1].decode()
    assert metric(text, 'kraken_state_corrupt_entries_total{store="cfg"}') == 1
