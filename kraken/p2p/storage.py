"""Pieces on disk: a complete blob to seed, or a download in progress that survives restarts.

A download lives in ``<cas root>/download/<hex>/``: ``data`` (pre-sized), ``metainfo`` and
``status`` (one byte per piece, 1 = verified). Pieces are written where they belong as they
arrive, hashed on the way, and only marked in ``status`` once their SHA-256 matches. When
every piece is there the whole file is hashed against the blob digest before it is moved
into the content-addressed store, so nothing unverified is ever served as a blob.

A complete blob seeded from the store carries a :class:`PieceGuard` when its owner wants
its pieces checked on the way out: pieces leave unhashed while the data file shows the stamp
of the store's verified mark (one ``fstat`` per piece); once it shows any other, each piece is
hashed before it is sent, and the first that fails its hash makes the torrent read nothing
more (the connection closes on the short read) and tells the owner, who quarantines the copy,
drops the torrent and fetches the blob again. Downloaders then look elsewhere at once
instead of receiving pieces they would reject.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from kraken.core.cas import CAStore, Stamp
from kraken.core.digest import Digest, new_hash
from kraken.p2p.bitfield import Bitfield
from kraken.p2p.metainfo import MetaInfo

METAINFO = "metainfo"


class PieceGuard:
    """Checks pieces of a seeded blob before they are sent (see the module docstring).

    *stamp* is the data file's stamp under which every piece is known good (the store's
    verified mark), or ``None`` when none is. *on_corrupt* hears of the first bad piece.
    """

    def __init__(self, stamp: Stamp | None, on_corrupt: Callable[[Torrent], None]) -> None:
        self.stamp = stamp
        self.trusted = stamp is not None
        self.checked: set[int] = set()  # pieces hashed right under self.stamp
        self.on_corrupt = on_corrupt
        self.corrupt = False

    def allows(self, torrent: Torrent, index: int, offset: int) -> bool:
        """May the read of *index* at *offset* go ahead? Pieces are judged at their start."""
        if self.corrupt:
            return False
        if offset != 0:
            return True
        fd = torrent.fd()
        now = Stamp.of(os.fstat(fd))
        if now != self.stamp:
            self.stamp, self.trusted, self.checked = now, False, set()
        if self.trusted or index in self.checked:
            return True
        mi = torrent.mi
        data = os.pread(fd, mi.piece_size(index), mi.piece_offset(index))
        if hashlib.sha256(data).digest() == mi.piece_hashes[index]:
            self.checked.add(index)
            return True
        self.corrupt = True
        self.on_corrupt(torrent)
        return False


class Torrent:
    """Read access to the pieces of one blob, and (for downloads) verified writes."""

    def __init__(self, mi: MetaInfo, path: Path, have: Bitfield, guard: PieceGuard | None = None) -> None:
        self.mi = mi
        self.path = path
        self.have = have
        self.guard = guard
        self._fd: int | None = None
        self._writing: dict[int, int] = {}  # piece -> writers receiving it now

    @property
    def info_hash(self) -> bytes:
        return self.mi.info_hash

    @property
    def digest(self) -> Digest:
        return self.mi.digest

    def complete(self) -> bool:
        return self.have.complete()

    def fd(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR if not self.complete() else os.O_RDONLY)
        return self._fd

    def read(self, index: int, offset: int, length: int) -> bytes:
        """Bytes of piece *index*; empty when the guard finds the piece corrupt."""
        if self.guard is not None and not self.guard.allows(self, index, offset):
            return b""
        return os.pread(self.fd(), length, self.mi.piece_offset(index) + offset)

    def begin_piece(self, index: int) -> PieceWriter | None:
        """A writer for *index*, or ``None`` if we have it already.

        Several peers may send one piece at once (the endgame asks two): the first writer
        writes as bytes arrive, later ones keep theirs until verified, and the first verified
        copy wins. A writer never writes once the piece is ours, so a corrupt copy still
        arriving cannot overwrite a verified one.
        """
        if index in self.have:
            return None
        others = self._writing.get(index, 0)
        self._writing[index] = others + 1
        return PieceWriter(self, index, hold=others > 0)

    def _piece_done(self, index: int, ok: bool) -> None:
        left = self._writing.pop(index, 1) - 1
        if left:
            self._writing[index] = left
        if ok and index not in self.have:
            self.have.set(index)
            self._mark(index)

    def _mark(self, index: int) -> None:
        pass

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class PieceWriter:
    """Receives one piece: hashes it as it arrives and writes it in ``FLUSH_AT`` batches.

    Network reads come in TLS-record sizes (16 KiB). The chunks (immutable bytes or views of
    them) are kept as they are and written with ``pwritev``: no copy in Python, and one
    system call per batch instead of one per record. With ``hold`` (another writer is
    receiving the same piece) nothing is written before the piece is verified.
    """

    FLUSH_AT = 1 << 20
    MAX_CHUNKS = 512  # well under IOV_MAX

    def __init__(self, torrent: Torrent, index: int, hold: bool = False) -> None:
        self.torrent = torrent
        self.index = index
        self.hold = hold
        self.size = torrent.mi.piece_size(index)
        self.pos = 0
        self.hash = hashlib.sha256()
        self.open = True
        self._chunks: list[bytes | memoryview] = []
        self._pending = 0
        self._flushed = 0

    def write(self, data: bytes | memoryview) -> None:
        if self.pos + len(data) > self.size:
            raise ValueError(f"piece {self.index}: more bytes than its size {self.size}")
        self.hash.update(data)
        self._chunks.append(data)
        self._pending += len(data)
        self.pos += len(data)
        if not self.hold and (self._pending >= self.FLUSH_AT or len(self._chunks) >= self.MAX_CHUNKS):
            self._flush()

    def _flush(self) -> None:
        if self.index in self.torrent.have:  # another copy was verified first: keep it
            self._chunks, self._pending = [], 0
            return
        for start in range(0, len(self._chunks), self.MAX_CHUNKS):
            self._write(self._chunks[start : start + self.MAX_CHUNKS])
        self._chunks, self._pending = [], 0

    def _write(self, chunks: list[bytes | memoryview]) -> None:
        offset = self.torrent.mi.piece_offset(self.index) + self._flushed
        size = sum(len(c) for c in chunks)
        written = os.pwritev(self.torrent.fd(), chunks, offset)
        if written < size:  # a short write: finish the rest plainly
            rest = b"".join(bytes(c) for c in chunks)[written:]
            while rest:
                n = os.pwrite(self.torrent.fd(), rest, offset + written)
                written += n
                rest = rest[n:]
        self._flushed += size

    def finish(self) -> bool | None:
        """Verify the piece: True if it matches its hash (then it is ours), False if not,
        ``None`` if another copy of it was verified first."""
        self.open = False
        if self.index in self.torrent.have:
            self._chunks, self._pending = [], 0
            self.torrent._piece_done(self.index, False)
            return None
        ok = self.pos == self.size and self.hash.digest() == self.torrent.mi.piece_hashes[self.index]
        if ok:
            self._flush()
        self._chunks, self._pending = [], 0
        self.torrent._piece_done(self.index, ok)
        return ok

    def abort(self) -> None:
        if self.open:
            self.open = False
            self.torrent._piece_done(self.index, False)


class DownloadTorrent(Torrent):
    def __init__(self, mi: MetaInfo, directory: Path) -> None:
        self.directory = directory
        status_path = directory / "status"
        raw = status_path.read_bytes() if status_path.exists() else b""
        have = Bitfield(mi.num_pieces)
        if len(raw) == mi.num_pieces:
            for i, b in enumerate(raw):
                if b == 1:
                    have.set(i)
        super().__init__(mi, directory / "data", have)
        self.blob_hash = new_hash(mi.digest.algo)
        self.hashed_pieces = 0
        self._status_fd = os.open(status_path, os.O_RDWR | os.O_CREAT, 0o644)
        if len(raw) != mi.num_pieces:
            os.ftruncate(self._status_fd, 0)
            os.pwrite(self._status_fd, bytes(mi.num_pieces), 0)

    def _mark(self, index: int) -> None:
        os.pwrite(self._status_fd, b"\x01", index)
        self._hash_ready_prefix()

    def recheck(self) -> list[int]:
        """Hash again every piece ``status`` says is verified (blocking); forget those that fail.

        For a download resumed from disk, before it is offered to anyone: its pieces may have
        changed since (a crash that kept ``status`` but not the data, a faulty disk). Returns
        the indices forgotten.
        """
        bad = []
        for index in self.have.indices():
            data = os.pread(self.fd(), self.mi.piece_size(index), self.mi.piece_offset(index))
            if hashlib.sha256(data).digest() != self.mi.piece_hashes[index]:
                self.have.clear(index)
                os.pwrite(self._status_fd, b"\x00", index)
                bad.append(index)
        return bad

    def _hash_ready_prefix(self) -> None:
        """Feed the blob hash every piece that now continues the hashed prefix.

        Pieces arrive in any order; hashing the prefix as it grows spreads the whole-blob check
        over the download, so little is left to hash when the last piece lands.
        """
        mi = self.mi
        while self.hashed_pieces < mi.num_pieces and self.hashed_pieces in self.have:
            index = self.hashed_pieces
            self.blob_hash.update(os.pread(self.fd(), mi.piece_size(index), mi.piece_offset(index)))
            self.hashed_pieces += 1

    def finish_blob_hash(self) -> Digest:
        """The digest of the whole file, hashing what the prefix has not covered (blocking)."""
        mi = self.mi
        with open(self.path, "rb") as f:
            f.seek(mi.piece_offset(self.hashed_pieces) if self.hashed_pieces < mi.num_pieces else mi.length)
            while chunk := f.read(1 << 20):
                self.blob_hash.update(chunk)
        self.hashed_pieces = mi.num_pieces
        return Digest(self.mi.digest.algo, self.blob_hash.hexdigest())

    def close(self) -> None:
        super().close()
        if self._status_fd is not None:
            os.close(self._status_fd)
            self._status_fd = None  # type: ignore[assignment]


class PieceStore:
    """Torrents of one host: complete blobs from the CAS, downloads in ``download/``."""

    def __init__(self, cas: CAStore) -> None:
        self.cas = cas
        self.download_root = cas.root / "download"
        self.download_root.mkdir(parents=True, exist_ok=True)

    def metainfo(self, d: Digest) -> MetaInfo | None:
        raw = self.cas.read_meta(d, METAINFO)
        return MetaInfo.from_json(raw) if raw else None

    def seed(self, mi: MetaInfo, on_corrupt: Callable[[Torrent], None] | None = None) -> Torrent | None:
        """The complete blob as a torrent, or ``None`` if we do not have it.

        With *on_corrupt* its pieces are checked on the way out (:class:`PieceGuard`).
        """
        path = self.cas.blob_path(mi.digest)
        if not path.is_file():
            return None
        guard = PieceGuard(self.cas.verified_stamp(mi.digest), on_corrupt) if on_corrupt else None
        return Torrent(mi, path, Bitfield.full(mi.num_pieces), guard)

    def open_download(self, mi: MetaInfo) -> DownloadTorrent:
        """Start or resume the download of *mi* (pieces already verified are kept)."""
        directory = self.download_root / mi.digest.hex
        directory.mkdir(parents=True, exist_ok=True)
        meta = directory / METAINFO
        if meta.exists() and meta.read_bytes() != mi.to_json():
            shutil.rmtree(directory)
            directory.mkdir()
        meta.write_bytes(mi.to_json())
        data = directory / "data"
        with open(data, "ab") as f:
            f.truncate(mi.length)
        return DownloadTorrent(mi, directory)

    def commit(self, torrent: DownloadTorrent) -> Path:
        """Hash the finished download against its digest and move it into the CAS (blocking)."""
        torrent.close()
        tmp = self.cas.temp_path()
        os.replace(torrent.path, tmp)
        try:
            path = self.cas.ingest(tmp, torrent.digest, verify=True, durable=False)
        finally:
            shutil.rmtree(torrent.directory, ignore_errors=True)
        self.cas.write_meta(torrent.digest, METAINFO, torrent.mi.to_json())
        return path

    def commit_verified(self, torrent: DownloadTorrent) -> Path:
        """Move a download whose whole-blob hash was already checked into the CAS."""
        torrent.close()
        tmp = self.cas.temp_path()
        os.replace(torrent.path, tmp)
        path = self.cas.ingest(tmp, torrent.digest, verify=False, checked=True, durable=False)
        self.cas.write_meta(torrent.digest, METAINFO, torrent.mi.to_json())
        shutil.rmtree(torrent.directory, ignore_errors=True)
        return path

    def delete(self, d: Digest) -> None:
        shutil.rmtree(self.download_root / d.hex, ignore_errors=True)
        self.cas.delete(d)


