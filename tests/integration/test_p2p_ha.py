"""Uber's failure scenarios and ours, with real origins, trackers and agents (p2p_ha_rig.py).

Each test kills, wipes or restarts whole processes and asserts what a client sees.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import redis as redis_client

from kraken.core.digest import Digest
from kraken.core.hashring import Ring
from kraken.core.journal import read_rows
from tests.integration.p2p_ha_rig import NS_PATH, Cluster, RedisServer, metric, request, wait_for
from tests.support import ServerProcess

MiB = 1024 * 1024


def test_upload_without_a_certificate_is_403(pki: Path, tmp_path: Path, servers: ServerProcess.Pool) -> None:
    c = Cluster(servers, pki, tmp_path, origins=1)
    d = Digest.of_bytes(b"nobody")
    import http.client
    import ssl

    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))  # shows no certificate
    conn = http.client.HTTPSConnection("127.0.0.1", c.origin_ports[0], context=context, timeout=10)
    conn.request("POST", f"/namespace/{NS_PATH}/blobs/{d}/uploads")
    response = conn.getresponse()
    assert response.status == 403 and b"client certificate" in response.read()


def test_backend_down_during_upload_then_download_works_and_write_back_drains(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    c = Cluster(servers, pki, tmp_path)
    data = os.urandom(3 * MiB + 7)
    d = Digest.of_bytes(data)
    blocker = c.backend / d.hex / "in-the-way"  # the backend refuses this blob for now
    blocker.mkdir(parents=True)
    assert c.push(data) == d
    agent = c.agent("a0")
    assert c.pull(agent, d) == (200, data)
    journal = tmp_path / f"o{c.origin_ports.index(c.owners(d)[0])}" / "store" / "journal.sqlite"
    assert [r.queue for r in read_rows(journal)] == ["writeback"]
    shutil.rmtree(blocker.parent)  # the backend is back
    assert wait_for(lambda: c.written_back(d) and not read_rows(journal))
    assert (c.backend / d.hex).read_bytes() == data


def test_blob_only_in_the_backend_and_unknown_or_failing_blobs(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    c = Cluster(servers, pki, tmp_path)
    agent = c.agent("a0")
    data = os.urandom(2 * MiB)
    d = Digest.of_bytes(data)
    (c.backend / d.hex).write_bytes(data)
    assert c.pull(agent, d) == (200, data)
    unknown = Digest.of_bytes(b"nowhere")
    status, body = c.pull(agent, unknown)
    assert status == 404 and json.loads(body)["error"]["code"] == "BLOB_UNKNOWN"
    # a namespace whose backend is down: an unknown blob is a 5xx that says why
    status, body = c.pull(agent, Digest.of_bytes(b"broken backend"), ns="down%2Fha")
    assert 500 <= status < 600
    error = json.loads(body)["error"]
    assert "backend" in error["message"].lower(), error


def test_all_origins_restarted_with_wiped_disks_after_write_back(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    c = Cluster(servers, pki, tmp_path)
    data = os.urandom(2 * MiB + 3)
    d = c.push(data)
    assert wait_for(lambda: c.written_back(d))
    first = c.agent("a0")
    assert c.pull(first, d) == (200, data)
    for origin in c.origins:
        origin.kill()
        c.wipe(origin)
        origin.start()
    assert c.pull(c.agent("a1"), d) == (200, data)
    # wipe the agent as well as every origin: the download works again
    first.kill()
    c.wipe(first)
    for origin in c.origins:
        origin.kill()
        c.wipe(origin)
        origin.start()
    first.start()
    assert c.pull(first, d) == (200, data)


def test_one_of_two_owners_stopped_download_and_upload_work(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    c = Cluster(servers, pki, tmp_path, origins=3)
    data = os.urandom(2 * MiB + 11)
    d = c.push(data)
    first, second = c.owners(d)
    survivor = c.origin_at(second)
    assert wait_for(lambda: request(second, "HEAD", f"/internal/namespace/{NS_PATH}/blobs/{d}?local=true",
                                    pki=c.pki)[0] == 200)
    c.origin_at(first).kill()
    assert wait_for(lambda: c.owners(d) == [second]), "the dead owner is routed around"
    assert c.pull(c.agent("a0"), d) == (200, data)
    status, body = request(survivor.port("http"), "GET", "/ready", pki=c.pki)
    assert status == 200, body
    # a new blob one of whose owners is down: the third origin stands in with a copy meanwhile
    third = next(p for p in c.origin_ports if p not in (first, second))
    while True:
        extra = os.urandom(256 * 1024)
        x = Digest.of_bytes(extra)
        if f"127.0.0.1:{first}" in Ring(c.cluster, 2).locations(x.hex) and third != c.owners(x)[0]:
            break
    assert c.push(extra) == x
    path = f"/internal/namespace/{NS_PATH}/blobs/{x}?local=true"
    assert wait_for(lambda: request(third, "HEAD", path, pki=c.pki)[0] == 200), "the stand-in has a copy"
    # an upload whose owners are both down goes to the next healthy origin on the ring
    while True:
        other = os.urandom(MiB)
        if c.owners(Digest.of_bytes(other))[0] == second:  # owned by the survivor and the dead one
            break
    survivor.kill()
    e = Digest.of_bytes(other)
    assert wait_for(lambda: c.owners(e) == [third])
    assert c.push(other) == e
    assert c.pull(c.agent("a1"), e) == (200, other)


def test_all_origins_down_when_a_download_starts_and_back_2s_later(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    c = Cluster(servers, pki, tmp_path)
    data = os.urandom(2 * MiB)
    d = c.push(data)
    assert wait_for(lambda: c.written_back(d))
    agent = c.agent("a0")
    for origin in c.origins:
        origin.kill()
    result: list[tuple[int, bytes]] = []
    puller = threading.Thread(target=lambda: result.append(c.pull(agent, d)))
    puller.start()
    time.sleep(2)
    for origin in c.origins:
        origin.start()
    puller.join(60)
    assert result == [(200, data)], result[:1] and result[0][1][:300]


def test_kill_9_of_an_origin_mid_upload_serves_no_partial_blob_and_the_retry_succeeds(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    c = Cluster(servers, pki, tmp_path)
    data = os.urandom(4 * MiB)
    d = Digest.of_bytes(data)
    owner = c.owners(d)[0]
    origin = c.origin_at(owner)
    base = f"/namespace/{NS_PATH}/blobs/{d}/uploads"
    status, body = request(owner, "POST", base, pki=c.pki)
    uid = json.loads(body)["uid"]
    half = {"Content-Range": f"0-{2 * MiB}"}
    status, body = request(owner, "PATCH", f"{base}/{uid}", data[: 2 * MiB], half, pki=c.pki)
    assert status == 200
    origin.kill()  # half the blob is in the upload file
    origin.start()
    for port in c.origin_ports:
        status, _ = request(port, "GET", f"/namespace/{NS_PATH}/blobs/{d}?local=true", pki=c.pki)
        assert status == 404, "no origin serves a partial blob"
    assert c.pull(c.agent("a0"), d)[0] == 404
    assert c.push(data) == d  # the client's retry
    assert c.pull(c.agent("a1"), d) == (200, data)


@pytest.mark.slow
def test_kill_9_of_a_tracker_under_load_downloads_finish_through_the_other(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    c = Cluster(servers, pki, tmp_path, trackers=2, origin_egress=30_000_000)  # about 4 s of downloads
    blobs = [os.urandom(3 * MiB + i) for i in range(4)]
    digests = [c.push(b) for b in blobs]
    agents = [c.agent(f"a{i}") for i in range(3)]
    results: dict[tuple[int, int], tuple[int, bytes]] = {}

    def pull(i: int, j: int) -> None:
        results[(i, j)] = c.pull(agents[i], digests[j])

    threads = [threading.Thread(target=pull, args=(i, j)) for i in range(3) for j in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    assert not results, "the downloads are still running"
    c.trackers[0].kill()
    for t in threads:
        t.join(90)
    assert len(results) == 12
    for (i, j), (status, body) in results.items():
        assert status == 200 and body == blobs[j], (i, j, status, body[:200])


def test_redis_peer_store_restart_loses_no_completed_download(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        c = Cluster(servers, pki, tmp_path, trackers=2, peer_store=redis.url)
        data = os.urandom(3 * MiB)
        d = c.push(data)
        first = c.agent("a0")
        assert c.pull(first, d) == (200, data)
        store = redis_client.Redis(port=redis.port, decode_responses=True)
        peer_sets = lambda: store.keys("kraken:tracker:e:*")  # noqa: E731
        assert len(peer_sets()) == 1 and store.zcard(peer_sets()[0]) == 1  # the agent's record
        redis.kill()
        redis.start()  # empty: no peer records survive
        assert peer_sets() == []
        assert wait_for(lambda: len(peer_sets()) == 1), "the complete agent announces itself again"
        second = c.agent("a1")
        assert c.pull(second, d) == (200, data)
        assert c.pull(first, d) == (200, data), "the completed download is still served"
        text = request(second.port("http"), "GET", "/metrics")[1].decode()
        assert metric(text, "kraken_agent_pieces_received_total") > 0
    finally:
        redis.kill()


def test_sighup_membership_change_copies_moved_blobs_to_their_new_owners(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    c = Cluster(servers, pki, tmp_path, origins=3, max_replica=1)
    small = c.cluster[:2]
    for origin in c.origins:
        c.reconfigure(origin, "origin", cluster=small)
        origin.send_signal(signal.SIGHUP)
    assert wait_for(lambda: all(p in c.origin_ports[:2] for p in c.owners(Digest.of_bytes(b"x"))))
    blobs = [os.urandom(64 * 1024 + i) for i in range(12)]
    digests = [c.push(b) for b in blobs]
    for origin in c.origins:
        c.reconfigure(origin, "origin", cluster=c.cluster)
        origin.send_signal(signal.SIGHUP)
    newcomer = c.origin_ports[2]
    assert wait_for(lambda: any(c.owners(d) == [newcomer] for d in digests))
    time.sleep(0.5)  # every origin has read its new config
    moved = [d for d in digests if c.owners(d) == [newcomer]]
    assert moved, "some blobs move to the new member"
    for d in moved:
        path = f"/internal/namespace/{NS_PATH}/blobs/{d}?local=true"
        there = wait_for(lambda p=path: request(newcomer, "HEAD", p, pki=c.pki)[0] == 200)
        assert there, c.origins[0].log()[-3000:]
    # a config that does not parse is refused and the running membership kept
    c.origins[0].config_file.write_text("origin: {cluster: [unclosed")
    c.origins[0].send_signal(signal.SIGHUP)
    assert wait_for(lambda: "config reload refused" in c.origins[0].log())
    assert c.owners(moved[0]) == [newcomer]


def test_an_origin_over_its_high_water_mark_evicts_but_never_a_blob_awaiting_write_back(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    c = Cluster(servers, pki, tmp_path, origins=1, store_capacity=3 * MiB, disk_high_water=0.9,
                disk_low_water=0.5, cleanup_interval=0.3)
    port = c.origin_ports[0]
    pending = os.urandom(MiB)
    p = Digest.of_bytes(pending)
    (c.backend / p.hex / "in-the-way").mkdir(parents=True)  # its write-back fails for now
    assert c.push(pending) == p
    others = [os.urandom(MiB + i) for i in range(3)]
    digests = [c.push(data) for data in others]
    assert wait_for(lambda: all(c.written_back(d) for d in digests))

    def local(d: Digest) -> bool:
        path = f"/internal/namespace/{NS_PATH}/blobs/{d}?local=true"
        return request(port, "HEAD", path, pki=c.pki)[0] == 200

    # 4 MiB of 3: written-back blobs go until the store is under the mark (at most one stays)
    assert wait_for(lambda: sum(local(d) for d in digests) <= 1)
    assert local(p), "the blob awaiting its write-back stays"
    text = request(port, "GET", "/metrics", pki=c.pki)[1].decode()
    assert metric(text, 'kraken_origin_evictions_total{reason="disk"}') >= 2
    agent = c.agent("a0")
    assert c.pull(agent, digests[0]) == (200, others[0])  # fetched again from the backend
    shutil.rmtree(c.backend / p.hex)
    assert wait_for(lambda: c.written_back(p))
    assert c.pull(agent, p) == (200, pending)
