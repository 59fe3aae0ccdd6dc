"""Upload sessions, the tag store and the proxy's blob cache, with a Clock and a temporary directory."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from kraken.core.cas import CAStore
from kraken.core.digest import Digest
from kraken.core.metrics import Metrics
from kraken.core.verify import BlobVerifier
from kraken.proxy.storage import LocalTags, ProxyStorage, adopt_flat_cache
from kraken.registry.errors import RegistryError
from kraken.registry.tagstore import TagStore
from kraken.registry.uploads import UploadManager


def test_chunks_hash_and_resume(tmp_path: Path) -> None:
    manager = UploadManager(tmp_path, Clock())
    session = manager.create("test/a")
    for part in (b"hello ", b"world"):
        sink = manager.open_chunk("test/a", session.id)
        sink.write(part)
        sink.release()
    assert session.size == 11
    assert str(session.digest()) == "sha256:" + hashlib.sha256(b"hello world").hexdigest()
    path = manager.finish(session)
    assert path.read_bytes() == b"hello world"
    assert session.id not in manager.sessions


def test_digest_with_another_algorithm(tmp_path: Path) -> None:
    """A chunked upload finished with a sha512 digest is hashed again from its file; a monolithic
    one names its algorithm first and is hashed with it as it arrives (no second read)."""
    blocking: list[object] = []

    def run_blocking(work: Callable[[], None]) -> Deferred[None]:
        blocking.append(work)
        work()
        d: Deferred[None] = Deferred()
        d.callback(None)
        return d

    manager = UploadManager(tmp_path, Clock(), run_blocking=run_blocking)
    chunked = manager.create("a")
    sink = manager.open_chunk("a", chunked.id)
    sink.write(b"hello sha512")
    sink.release()
    found: list[Digest] = []
    manager.digest_as(chunked, "sha512").addCallback(found.append)
    manager.digest_as(chunked, "sha256").addCallback(found.append)
    assert found == [Digest.of_bytes(b"hello sha512", "sha512"), Digest.of_bytes(b"hello sha512")]
    assert len(blocking) == 1  # only the sha512 needed a read of the file
    mono = manager.create("a")
    manager.hash_with(mono, "sha512")
    sink = manager.open_chunk("a", mono.id)
    sink.write(b"hello sha512")
    sink.release()
    manager.digest_as(mono, "sha512").addCallback(found.append)
    assert found[-1] == Digest.of_bytes(b"hello sha512", "sha512") and len(blocking) == 1
    manager.hash_with(mono, "sha256")  # too late: bytes were hashed already; digest_as reads the file
    manager.digest_as(mono, "sha256").addCallback(found.append)
    assert found[-1] == Digest.of_bytes(b"hello sha512") and len(blocking) == 2


def test_failed_chunk_rolls_back(tmp_path: Path) -> None:
    manager = UploadManager(tmp_path, Clock())
    session = manager.create("a")
    ok = manager.open_chunk("a", session.id)
    ok.write(b"abc")
    ok.release()
    bad = manager.open_chunk("a", session.id)
    bad.write(b"defgh")
    bad.abort()  # the client went away mid-chunk
    assert session.size == 3 and not session.busy
    assert str(session.digest()) == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    again = manager.open_chunk("a", session.id)
    again.write(b"d")
    again.release()
    assert manager.finish(session).read_bytes() == b"abcd"


def test_size_limit(tmp_path: Path) -> None:
    manager = UploadManager(tmp_path, Clock(), max_size=10)
    session = manager.create("a")
    sink = manager.open_chunk("a", session.id)
    sink.write(b"12345")
    sink.write(b"678901")
    assert sink.error is not None and sink.error.status == 413
    sink.write(b"more")  # discarded
    assert session.size == 0 and not session.busy


def test_one_writer_per_session_and_names_bind(tmp_path: Path) -> None:
    manager = UploadManager(tmp_path, Clock())
    session = manager.create("a")
    first = manager.open_chunk("a", session.id)
    second = manager.open_chunk("a", session.id)
    assert first.error is None and second.error is not None and second.error.status == 409
    other = manager.open_chunk("b", session.id)
    assert isinstance(other.error, RegistryError) and other.error.code == "BLOB_UPLOAD_UNKNOWN"


def test_session_cap_and_no_idle_descriptors(tmp_path: Path) -> None:
    clock = Clock()
    manager = UploadManager(tmp_path, clock, ttl=100, max_sessions=2)
    first = manager.create("a")
    manager.create("a")
    assert first.writer is None  # idle sessions hold no file open
    try:
        manager.create("a")
    except RegistryError as e:
        assert e.code == "TOOMANYREQUESTS" and e.status == 429
    else:
        raise AssertionError("a third session was allowed")
    clock.advance(101)
    manager.create("a")  # the idle ones expired to make room


def test_idle_sessions_expire(tmp_path: Path) -> None:
    clock = Clock()
    manager = UploadManager(tmp_path, clock, ttl=100)
    manager.start_expiry(10)
    old = manager.create("a")
    clock.advance(60)
    fresh = manager.create("a")
    clock.advance(50)
    assert old.id not in manager.sessions and not old.path.exists()
    assert fresh.id in manager.sessions
    clock.advance(60)
    assert not manager.sessions
    manager.stop_expiry()


def test_stale_upload_files_are_removed_at_start(tmp_path: Path) -> None:
    (tmp_path / "dead.upload").write_bytes(b"x")
    UploadManager(tmp_path, Clock())
    assert not (tmp_path / "dead.upload").exists()


def test_one_client_cannot_take_every_session(tmp_path: Path) -> None:
    metrics = Metrics("test")
    manager = UploadManager(tmp_path, Clock(), max_sessions=10, max_per_client=3, metrics=metrics)
    for _ in range(3):
        manager.create("a", client="10.0.0.1")
    with pytest.raises(RegistryError) as e:
        manager.create("b", client="10.0.0.1")
    assert e.value.status == 429 and e.value.code == "TOOMANYREQUESTS" and e.value.headers["Retry-After"]
    for _ in range(3):
        manager.create("a", client="10.0.0.2")
    assert manager.per_client == {"10.0.0.1": 3, "10.0.0.2": 3}
    manager.discard(next(iter(manager.sessions.values())))
    manager.create("a", client="10.0.0.1")  # a finished or deleted session makes room again
    sample = metrics.registry.get_sample_value
    assert sample("kraken_test_upload_sessions_refused_total", {"limit": "client"}) == 1


def _patch(manager: UploadManager, name: str, sid: str, data: bytes) -> None:
    sink = manager.open_chunk(name, sid)
    sink.write(data)
    done = manager.commit_chunk(sink)
    assert done.called and sink.session is not None and not sink.session.busy


def test_sessions_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    clock.advance(1000)
    manager = UploadManager(tmp_path, clock, ttl=100)
    session = manager.create("test/a", client="c1", persistent=True)
    manager.sync_new(session)
    _patch(manager, "test/a", session.id, b"hello ")
    clock.advance(10)
    _patch(manager, "test/a", session.id, b"wor")
    unacknowledged = manager.open_chunk("test/a", session.id)
    unacknowledged.write(b"XXXX")  # the process dies here: bytes on disk, no 202
    again = UploadManager(tmp_path, clock, ttl=100)
    resumed = again.get("test/a", session.id)
    assert (resumed.size, resumed.client, resumed.touched) == (9, "c1", 1010)
    assert resumed.path.read_bytes() == b"hello wor"
    _patch(again, "test/a", session.id, b"ld")
    assert resumed.digest() == Digest.of_bytes(b"hello world")
    assert again.per_client == {"c1": 1}
    again.finish(resumed).unlink()
    assert not list(tmp_path.iterdir())


def test_without_sync_the_journal_still_records_each_chunk(tmp_path: Path) -> None:
    def no_thread(work: Callable[[], None]) -> Deferred[None]:
        raise AssertionError("nothing is synced in a thread")

    manager = UploadManager(tmp_path, Clock(), sync=False, run_blocking=no_thread)
    session = manager.create("a", persistent=True)
    _patch(manager, "a", session.id, b"abc")
    assert UploadManager(tmp_path, Clock()).get("a", session.id).size == 3


def test_expired_and_damaged_sessions_are_dropped_at_start(tmp_path: Path) -> None:
    clock = Clock()
    manager = UploadManager(tmp_path, clock, ttl=100)
    old = manager.create("a", persistent=True)
    _patch(manager, "a", old.id, b"old")
    clock.advance(50)
    short = manager.create("a", persistent=True)
    _patch(manager, "a", short.id, b"12345")
    short.path.write_bytes(b"12")  # a power cut while the chunk's syncs ran: resume from what is there
    damaged = manager.create("a", persistent=True)
    damaged.journal.write_bytes(b"not json\n")
    kept = manager.create("a", persistent=True)
    monolithic = manager.create("a")  # not persistent: gone with the process
    (tmp_path / "x.manifest").write_bytes(b"{}")
    clock.advance(60)
    again = UploadManager(tmp_path, clock, ttl=100)
    assert sorted(again.sessions) == sorted([kept.id, short.id])
    assert again.sessions[short.id].size == 2 and again.sessions[short.id].digest() == Digest.of_bytes(b"12")
    left = [kept.path.name, kept.journal.name, short.path.name, short.journal.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(left)
    assert monolithic.id not in again.sessions


def test_a_chunk_being_made_durable_is_not_undone(tmp_path: Path) -> None:
    pending: list[Deferred[None]] = []

    def later(work: Callable[[], None]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        d.addCallback(lambda _: work())
        pending.append(d)
        return d

    manager = UploadManager(tmp_path, Clock(), run_blocking=later)
    session = manager.create("a", persistent=True)
    sink = manager.open_chunk("a", session.id)
    sink.write(b"abc")
    answer = manager.commit_chunk(sink)
    answer.cancel()  # the client went away while the disk syncs
    answer.addErrback(lambda f: None)
    sink.abort()
    assert session.busy and session.size == 3
    pending[0].callback(None)
    assert session.busy  # the other sync is still running
    pending[1].callback(None)
    assert not session.busy and session.size == 3
    assert session.journal.read_bytes().endswith(b"\n3 0.000\n")


def test_tag_store(tmp_path: Path) -> None:
    store = TagStore(tmp_path)
    assert store.get("test/a", "v1") is None and store.tags("test/a") is None
    store.put("test/a", "v1", "sha256:" + "1" * 64)
    store.put("test/a", "v2", "sha256:" + "2" * 64)
    store.put("test/a/b", "v1", "sha256:" + "3" * 64)
    store.put("test/a", "v1", "sha256:" + "4" * 64)  # a moved tag: newest wins at once
    assert store.get("test/a", "v1") == "sha256:" + "4" * 64
    assert store.tags("test/a") == ["v1", "v2"]
    assert store.repositories() == ["test/a", "test/a/b"]
    assert store.entries("test/a:") == ["test/a:v1", "test/a:v2"]
    assert store.entries("test/a") == ["test/a/b:v1", "test/a:v1", "test/a:v2"]


def test_proxy_keeps_blobs_of_the_older_cache_layout(tmp_path: Path) -> None:
    body = b"layer"
    digest = Digest.of_bytes(body)
    old = tmp_path / "sha256" / digest.hex[:2]
    old.mkdir(parents=True)
    (old / digest.hex).write_bytes(body)
    (old / f"{digest.hex}.123.tmp").write_bytes(b"partial")
    cache = CAStore(tmp_path)
    verifier = BlobVerifier(Clock(), cache, Metrics("adopt"))
    storage = ProxyStorage(cache, LocalTags(TagStore(tmp_path / "tags")), None, verifier)
    assert storage.cache.blob_path(digest).read_bytes() == body
    assert not (old / digest.hex).exists()
    assert adopt_flat_cache(cache) == 0

    (old / f"{digest.hex}.123.tmp").unlink()
    adopt_flat_cache(cache)
    assert not (tmp_path / "sha256").exists()
