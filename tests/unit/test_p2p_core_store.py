"""Digest parsing, the content-addressed store, the rendezvous ring and the fs backend."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from kraken.backends import BlobNotFound, make_backend
from kraken.backends.base import BackendError, BackendRouter
from kraken.core.cas import CAStore, DigestMismatch, UnknownUpload, Verdict
from kraken.core.digest import Digest
from kraken.core.hashring import Ring
from kraken.core.uploads import ChunkWriter

HEX = "a" * 64


def write_upload(store: CAStore, uid: str, offset: int, chunk: bytes) -> None:
    writer = ChunkWriter(store.upload_path(uid), offset)
    try:
        writer.write(chunk)
    finally:
        writer.close()


def test_digest_parse_and_str() -> None:
    d = Digest.parse(f"sha256:{HEX}")
    assert str(d) == f"sha256:{HEX}" and d.hex == HEX and d.algo == "sha256"
    assert Digest.parse_loose(HEX) == d
    assert Digest.of_bytes(b"abc").hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_sha512_digests() -> None:
    d = Digest.of_bytes(b"abc", "sha512")
    assert str(d).startswith("sha512:ddaf35a193617aba") and len(d.hex) == 128
    assert Digest.parse(str(d)) == d == Digest.parse_loose(d.hex) == Digest.from_hex(d.hex)
    assert Digest.from_hex(HEX).algo == "sha256"
    with pytest.raises(ValueError, match="64 \\(sha256\\) or 128"):
        Digest.from_hex("ab" * 40)


def test_cas_keeps_sha512_blobs_beside_sha256_ones(tmp_path: Path) -> None:
    cas = CAStore(tmp_path)
    data = b"the same bytes under two digests"
    long, short = Digest.of_bytes(data, "sha512"), Digest.of_bytes(data)
    for d in (long, short):
        src = cas.temp_path()
        src.write_bytes(data)
        cas.ingest(src, d)
        assert cas.blob_path(d).read_bytes() == data and cas.is_verified(d)
    assert {e.digest for e in cas.entries()} == {long, short}
    bad = cas.temp_path()
    bad.write_bytes(b"other bytes")
    with pytest.raises(DigestMismatch):
        cas.ingest(bad, Digest.of_bytes(b"yet other", "sha512"))
    cas.blob_path(long).write_bytes(b"rotted")
    assert cas.verify(long) is Verdict.CORRUPT and cas.verify(short) is Verdict.OK


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (HEX, "lacks an algorithm prefix"),
        (f"sha512:{HEX}", "128 lowercase hex"),
        (f"sha384:{HEX}", "unsupported digest algorithm"),
        (f"md5:{HEX}", "unsupported digest algorithm"),
        ("sha256:abc", "64 lowercase hex"),
        (f"sha256:{HEX.upper()}", "64 lowercase hex"),
        (f"sha256:{HEX}0", "64 lowercase hex"),
    ],
)
def test_digest_parse_errors_are_clear(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Digest.parse(text)


def test_cas_upload_commit_and_verify(tmp_path: Path) -> None:
    store = CAStore(tmp_path)
    data = os.urandom(100_000)
    d = Digest.of_bytes(data)
    uid = store.start_upload()
    write_upload(store, uid, 50_000, data[50_000:])
    assert not store.has(d)
    write_upload(store, uid, 0, data[:50_000])
    store.commit_upload(uid, d)
    assert store.blob_path(d).read_bytes() == data
    assert store.size(d) == len(data)
    with pytest.raises(UnknownUpload):
        store.upload_path(uid)
    store.write_meta(d, "metainfo", b"{}")
    assert store.read_meta(d, "metainfo") == b"{}"
    assert [e.digest for e in store.entries()] == [d]


def test_cas_rejects_wrong_content_and_leaves_nothing(tmp_path: Path) -> None:
    store = CAStore(tmp_path)
    uid = store.start_upload()
    write_upload(store, uid, 0, b"hello")
    wrong = Digest.of_bytes(b"other")
    with pytest.raises(DigestMismatch):
        store.commit_upload(uid, wrong)
    assert not store.has(wrong)
    assert list(store.upload_dir.iterdir()) == []


def test_cas_ingest_twice_is_idempotent_and_cleanup_by_tti(tmp_path: Path) -> None:
    store = CAStore(tmp_path)
    d = Digest.of_bytes(b"x")
    for _ in range(2):
        tmp = store.temp_path()
        tmp.write_bytes(b"x")
        store.ingest(tmp, d)
    assert store.has(d)
    assert store.cleanup(tti=10, now=store.blob_path(d).stat().st_atime + 5) == []
    assert store.cleanup(tti=10, now=store.blob_path(d).stat().st_atime + 11) == [d]
    assert not store.has(d)


def test_ring_is_stable_and_balanced() -> None:
    nodes = [f"10.0.0.{i}:80" for i in range(5)]
    ring = Ring(nodes, max_replica=2)
    owners = Counter()
    for i in range(2000):
        key = Digest.of_bytes(str(i).encode()).hex
        locs = ring.locations(key)
        assert len(locs) == 2 and locs == ring.locations(key)
        owners[locs[0]] += 1
    assert all(300 < owners[n] < 500 for n in nodes), owners
    smaller = Ring(nodes[:-1], max_replica=1)
    moved = sum(
        1
        for i in range(500)
        if (k := Digest.of_bytes(str(i).encode()).hex) and ring.ranked(k)[0] != nodes[-1]
        and smaller.locations(k)[0] != ring.ranked(k)[0]
    )
    assert moved == 0, "removing a node must move only the keys it owned"


def test_ring_skips_unhealthy_owners() -> None:
    ring = Ring(["a:1", "b:1", "c:1"], max_replica=1)
    top = ring.ranked("k")
    assert ring.locations("k", healthy=lambda n: n != top[0]) == [top[1]]
    assert ring.locations("k", healthy=lambda n: False) == [top[0]]


@pytest_twisted.inlineCallbacks
def test_fs_backend_roundtrip(tmp_path: Path) -> Any:
    backend = make_backend({"type": "fs", "root": str(tmp_path / "remote")})
    src = tmp_path / "src"
    src.write_bytes(b"payload")
    yield backend.upload("ns", HEX, str(src))
    yield backend.upload("tags", "repo/x:latest", str(src))
    size = yield backend.stat("ns", HEX)
    assert size == 7
    yield backend.download("ns", HEX, str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == b"payload"
    names = yield backend.list("repo/")
    assert names == ["repo/x:latest"]
    entries = yield backend.entries("")
    assert [(e.name, e.size) for e in entries] == [(HEX, 7), ("repo/x:latest", 7)]
    assert entries[0].modified == (tmp_path / "remote" / HEX).stat().st_mtime
    with pytest.raises(BlobNotFound):
        yield backend.stat("ns", "b" * 64)
    with pytest.raises(BackendError):
        yield backend.stat("ns", "../etc/passwd")
    yield backend.delete("tags", "repo/x:latest")
    names = yield backend.list("repo/")
    assert names == []
    with pytest.raises(BlobNotFound):
        yield backend.delete("tags", "repo/x:latest")
    with pytest.raises(BackendError):
        yield backend.delete("ns", "../etc/passwd")


def test_backend_config_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend type 'nope'"):
        make_backend({"type": "nope"})
    router = BackendRouter.from_config(
        [{"namespace": "^docker/", "backend": {"type": "fs", "root": str(tmp_path)}}]
    )
    assert router.for_namespace("docker/x") is not None
    assert router.for_namespace("other") is None


def test_download_hashes_its_prefix_as_pieces_arrive(tmp_path: Path) -> None:
    from kraken.p2p.metainfo import generate
    from kraken.p2p.storage import PieceStore

    piece = 4096
    data = os.urandom(piece * 4 + 100)
    (tmp_path / "src").write_bytes(data)
    mi = generate(tmp_path / "src", Digest.of_bytes(data), piece)
    store = PieceStore(CAStore(tmp_path / "cas"))

    def put(torrent: Any, index: int) -> None:
        writer = torrent.begin_piece(index)
        writer.write(data[index * piece : (index + 1) * piece])
        assert writer.finish()

    torrent = store.open_download(mi)
    put(torrent, 2)
    assert torrent.hashed_pieces == 0, "piece 2 does not continue the prefix yet"
    put(torrent, 0)
    put(torrent, 1)
    assert torrent.hashed_pieces == 3
    torrent.close()
    resumed = store.open_download(mi)  # after a restart the prefix is hashed again when needed
    for index in (3, 4):
        put(resumed, index)
    assert resumed.finish_blob_hash() == mi.digest


def two_piece_download(tmp_path: Path, piece: int) -> tuple[bytes, Any]:
    """Random data of two pieces, and an empty download of it."""
    from kraken.p2p.metainfo import generate
    from kraken.p2p.storage import PieceStore

    data = os.urandom(piece * 2)
    (tmp_path / "src").write_bytes(data)
    mi = generate(tmp_path / "src", Digest.of_bytes(data), piece)
    return data, PieceStore(CAStore(tmp_path / "cas")).open_download(mi)


def test_piece_writer_finishes_a_short_vectored_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kraken.p2p import storage

    piece = 4096
    data, torrent = two_piece_download(tmp_path, piece)
    real = os.pwritev

    def first_chunk_only(fd: int, chunks: list[Any], offset: int) -> int:
        return real(fd, chunks[:1], offset)

    monkeypatch.setattr(storage.os, "pwritev", first_chunk_only)
    writer = torrent.begin_piece(1)
    for start in range(0, piece, 1000):
        writer.write(memoryview(data)[piece + start : piece + min(start + 1000, piece)])
    assert writer.finish()
    assert torrent.read(1, 0, piece) == data[piece:]


def test_a_corrupt_copy_cannot_overwrite_a_verified_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kraken.p2p import storage

    piece = 4096
    data, torrent = two_piece_download(tmp_path, piece)
    monkeypatch.setattr(storage.PieceWriter, "FLUSH_AT", 1024)  # the first writer writes early
    corrupt, good = torrent.begin_piece(0), torrent.begin_piece(0)
    corrupt.write(b"\0" * 2048)
    good.write(data[:piece])
    assert good.finish() is True, "the held copy is verified and written"
    corrupt.write(b"\0" * 2048)  # the rest of the bad copy arrives after
    assert corrupt.finish() is None
    assert torrent.read(0, 0, piece) == data[:piece]
    bad_first, late_good = torrent.begin_piece(1), torrent.begin_piece(1)
    bad_first.write(b"\1" * piece)
    assert bad_first.finish() is False, "its early writes are on disk but the piece is not ours"
    late_good.write(data[piece:])
    assert late_good.finish() is True
    assert torrent.read(1, 0, piece) == data[piece:] and torrent.complete()


def test_cas_touch_keeps_a_blob_from_idle_cleanup(tmp_path: Path) -> None:
    cache = CAStore(tmp_path)
    old, used = Digest.parse("sha256:" + "1" * 64), Digest.parse("sha256:" + "2" * 64)
    for d, body in ((old, b"old"), (used, b"used")):
        src = cache.temp_path()
        src.write_bytes(body)
        cache.ingest(src, d, verify=False)
    past = time.time() - 1000
    os.utime(cache.blob_path(old), (past, past))
    os.utime(cache.blob_path(used), (past, past))
    cache.touch(used)
    assert len(cache.cleanup(tti=500, now=time.time())) == 1
    assert cache.size(old) is None and cache.size(used) == 4
