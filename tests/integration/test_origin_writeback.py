"""A write-back that fails survives the origin's death and completes after the restart."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest_twisted

from kraken.core.digest import Digest
from kraken.core.journal import read_rows
from kraken.p2p.origins import OriginClient
from tests.integration.p2p_fixtures import client, metric, origin_config, sleep
from tests.support import tls_settings

FAILURES = 'kraken_origin_queue_failures_total{queue="writeback"}'
DONE_OK = 'kraken_origin_queue_done_total{queue="writeback",result="ok"}'


@pytest_twisted.inlineCallbacks
def test_pending_write_back_resumes_after_a_crash(servers: Any, pki: Path, tmp_path: Path) -> Any:
    from twisted.internet import reactor

    backend = tmp_path / "backend"
    data = os.urandom(2 * 1024 * 1024 + 5)
    d = Digest.of_bytes(data)
    squatter = backend / d.hex  # a directory where the blob must go: every upload to it fails
    (squatter / "in-the-way").mkdir(parents=True)
    config = origin_config(pki, tmp_path / "o", backend, writeback_retry_first=0.1, writeback_retry_cap=0.3)
    origin = servers.start("kraken-origin", config, name="origin")
    base = f"127.0.0.1:{origin.port('http')}"
    src = tmp_path / "blob"
    src.write_bytes(data)
    yield OriginClient(reactor, base, tls_settings(pki, "client")).upload("ns", d, str(src))

    http = client(pki)
    for _ in range(100):
        retries = yield metric(http, f"https://{base}/metrics", FAILURES)
        if retries >= 2:
            break
        yield sleep(0.1)
    assert retries >= 2, origin.log()
    pending = yield metric(http, f"https://{base}/metrics", 'kraken_origin_queue_depth{queue="writeback"}')
    assert pending == 1
    journal = tmp_path / "o" / "store" / "journal.sqlite"
    assert [r.payload for r in read_rows(journal)] == [{"namespace": "ns", "digest": str(d)}]

    origin.kill()  # as a crash would: nothing gets to run at shutdown
    assert len(read_rows(journal)) == 1 and not squatter.is_file()
    shutil.rmtree(squatter)  # the backend works again

    origin.start()
    for _ in range(100):
        if squatter.is_file() and not read_rows(journal):
            break
        yield sleep(0.1)
    assert squatter.read_bytes() == data, origin.log()
    assert read_rows(journal) == []
    base = f"127.0.0.1:{origin.port('http')}"
    ok = yield metric(http, f"https://{base}/metrics", DONE_OK)
    pending = yield metric(http, f"https://{base}/metrics", 'kraken_origin_queue_depth{queue="writeback"}')
    assert ok == 1 and pending == 0
    assert "queue writeback: resumed 1 pending tasks" in origin.log()
