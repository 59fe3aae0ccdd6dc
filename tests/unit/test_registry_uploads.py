"""Upload sessions, the tag store and the proxy's blob cache, with a Clock and a temporary directory."""

from __future__ import annotations

import hashlib
from pathlib import Path

from twisted.internet.task import Clock

from kraken.core.cas import CAStore
from kraken.core.digest import Digest
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


def test_tag_store(tmp_path: Path) -> None:
    store = TagStore(tmp_path)
    assert store.get("test/a", "v1") is None and store.tags("test/a") is None
    store.put("test/a", "v1", "sha256:1")
    store.put("test/a", "v2", "sha256:2")
    store.put("test/a/b", "v1", "sha256:3")
    store.put("test/a", "v1", "sha256:4")  # a moved tag: newest wins at once
    assert store.get("test/a", "v1") == "sha256:4"
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
    storage = ProxyStorage(cache, LocalTags(TagStore(tmp_path / "tags")), None)
    assert storage.cache.blob_path(digest).read_bytes() == body
    assert not (old / digest.hex).exists()
    assert adopt_flat_cache(cache) == 0

    (old / f"{digest.hex}.123.tmp").unlink()
    adopt_flat_cache(cache)
    assert not (tmp_path / "sha256").exists()
