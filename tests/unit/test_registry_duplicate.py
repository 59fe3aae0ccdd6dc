"""Build-index neighbour copies: retries with backoff on a Clock until they land, newest digest wins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from kraken.buildindex.duplicate import DELETED, Duplicator
from kraken.core.journal import Journal, read_rows


def _mem(clock: Clock) -> Journal:
    return Journal(":memory:", clock)


class Neighbours:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls: list[tuple[str, str, str, str]] = []
        self.stored: dict[tuple[str, str, str], str] = {}
        self.held: list[Deferred[Any]] = []

    def send(self, neighbour: str, repo: str, tag: str, digest: str) -> Deferred[Any]:
        self.calls.append((neighbour, repo, tag, digest))
        if self.failures:
            self.failures -= 1
            return fail(ConnectionRefusedError("down"))
        self.stored[(neighbour, repo, tag)] = digest
        return succeed(None)


def test_copies_to_every_neighbour() -> None:
    n = Neighbours()
    outcomes: list[str] = []
    dup = Duplicator(["a:1", "b:2"], n.send, _mem(Clock()), on_result=outcomes.append)
    dup.tag_stored("test/x", "v1", "sha256:1")
    assert n.stored == {("a:1", "test/x", "v1"): "sha256:1", ("b:2", "test/x", "v1"): "sha256:1"}
    assert outcomes == ["ok", "ok"] and not dup.pending


def test_retries_with_backoff_then_succeeds() -> None:
    clock = Clock()
    n = Neighbours(failures=3)
    dup = Duplicator(["a:1"], n.send, _mem(clock), first_delay=1.0)
    dup.tag_stored("r", "t", "sha256:1")
    assert len(n.calls) == 1
    clock.advance(1.0)
    assert len(n.calls) == 2
    clock.advance(1.9)
    assert len(n.calls) == 2  # second retry waits 2 s
    clock.advance(0.1)
    assert len(n.calls) == 3
    clock.advance(4.0)
    assert len(n.calls) == 4 and n.stored == {("a:1", "r", "t"): "sha256:1"}
    assert not dup.pending


def test_never_gives_up() -> None:
    clock = Clock()
    n = Neighbours(failures=100)
    outcomes: list[str] = []
    dup = Duplicator(["a:1"], n.send, _mem(clock), first_delay=1.0, max_delay=10.0, on_result=outcomes.append)
    dup.tag_stored("r", "t", "sha256:1")
    clock.pump([10.0] * 100)
    assert len(n.calls) == 101 and outcomes == ["retry"] * 100 + ["ok"] and not dup.pending


def test_newer_digest_replaces_a_pending_retry() -> None:
    clock = Clock()
    n = Neighbours(failures=1)
    dup = Duplicator(["a:1"], n.send, _mem(clock), first_delay=5.0)
    dup.tag_stored("r", "t", "sha256:old")
    dup.tag_stored("r", "t", "sha256:new")
    clock.advance(60)
    assert n.stored == {("a:1", "r", "t"): "sha256:new"}
    assert [c[3] for c in n.calls] == ["sha256:old", "sha256:new"]


def test_stop_cancels_retries() -> None:
    clock = Clock()
    n = Neighbours(failures=1)
    dup = Duplicator(["a:1"], n.send, _mem(clock))
    dup.tag_stored("r", "t", "sha256:1")
    dup.stop()
    assert not clock.getDelayedCalls()


def test_pending_copies_are_journaled_and_resumed(tmp_path: Path) -> None:
    down = Neighbours(failures=100)
    path = tmp_path / "journal.sqlite"
    dup = Duplicator(["a:1", "b:2"], down.send, Journal(path, Clock()))
    dup.tag_stored("test/x", "v1", "sha256:1")
    dup.tag_stored("test/x", "v1", "sha256:2")  # replaces the pending copies
    assert sorted((r.key, r.payload["digest"]) for r in read_rows(path)) == [
        ("a:1/test/x:v1", "sha256:2"), ("b:2/test/x:v1", "sha256:2")]
    dup.stop()  # as a crash would leave it: the rows stay

    legacy = tmp_path / "pending"  # marker files of an earlier version are taken over
    legacy.mkdir()
    (legacy / "old.json").write_text('{"neighbour": "a:1", "repo": "r", "tag": "t", "digest": "sha256:9"}')
    (legacy / "garbled.json").write_bytes(b'{"neighbour": "a:1", "re')
    corrupt: list[None] = []
    up = Neighbours()
    again = Duplicator(["a:1"], up.send, Journal(path, Clock()), legacy_markers=legacy,
                       on_corrupt=lambda: corrupt.append(None))
    assert again.resume() == 1  # b:2 is no neighbour any more: its row waits
    assert up.stored == {("a:1", "test/x", "v1"): "sha256:2", ("a:1", "r", "t"): "sha256:9"}
    assert [r.key for r in read_rows(path)] == ["b:2/test/x:v1"]
    assert sorted(p.name for p in legacy.iterdir()) == ["garbled.bad"] and len(corrupt) == 1


def test_a_removal_replaces_a_pending_copy() -> None:
    clock = Clock()
    n = Neighbours(failures=1)
    dup = Duplicator(["a:1"], n.send, _mem(clock), first_delay=1.0)
    dup.tag_stored("r", "t", "sha256:1")
    dup.tag_deleted("r", "t")
    clock.advance(10)
    assert n.calls[-1] == ("a:1", "r", "t", DELETED)
    assert n.stored == {("a:1", "r", "t"): DELETED} and not dup.pending
