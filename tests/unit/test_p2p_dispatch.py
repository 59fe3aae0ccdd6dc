"""The dispatcher with a Clock and fake links: pipeline limits, rarest-first, endgame, timeouts."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from kraken.core.cas import CAStore
from kraken.core.digest import Digest
from kraken.p2p.bandwidth import TokenBucket
from kraken.p2p.bitfield import Bitfield
from kraken.p2p.dispatch import DispatchConfig, Dispatcher
from kraken.p2p.metainfo import generate
from kraken.p2p.storage import PieceStore

PIECE = 1024


class FakeLink:
    def __init__(self, name: str, is_origin: bool = False) -> None:
        self.peer_id = name.encode().ljust(20, b".")
        self.is_origin = is_origin
        self.requests: list[int] = []
        self.announces: list[int] = []
        self.sent: list[int] = []
        self.errors: list[int] = []
        self.cancels: list[int] = []
        self.completes = 0
        self.closed: str | None = None

    def send_request(self, index: int) -> None:
        self.requests.append(index)

    def send_announce(self, index: int) -> None:
        self.announces.append(index)

    def send_cancel(self, index: int) -> None:
        self.cancels.append(index)

    def send_complete(self) -> None:
        self.completes += 1

    def send_error(self, index: int, code: int, message: str) -> None:
        self.errors.append(index)

    def send_piece(self, index: int) -> None:
        self.sent.append(index)

    def close(self, reason: str) -> None:
        self.closed = reason


@pytest.fixture
def setup(tmp_path: Path):
    data = os.urandom(PIECE * 10)
    src = tmp_path / "blob"
    src.write_bytes(data)
    mi = generate(src, Digest.of_bytes(data), PIECE)
    store = PieceStore(CAStore(tmp_path / "cas"))
    torrent = store.open_download(mi)
    clock = Clock()
    done: list[bool] = []
    bad: list[bytes] = []
    d = Dispatcher(
        torrent, clock, DispatchConfig(piece_request_min_timeout=4, piece_request_timeout_per_mib=0),
        on_complete=lambda: done.append(True), on_bad_peer=lambda p, why: bad.append(p), rng=random.Random(1),
    )
    return d, data, clock, done, bad, store, mi


def bits(n: int, have) -> Bitfield:
    b = Bitfield(n)
    for i in have:
        b.set(i)
    return b


def deliver(d: Dispatcher, link: FakeLink, index: int, data: bytes) -> bool:
    writer = d.torrent.begin_piece(index)
    if writer is None:
        d.on_piece(link.peer_id, index, None)
        return False
    writer.write(data[index * PIECE : (index + 1) * PIECE])
    ok = writer.finish()
    d.on_piece(link.peer_id, index, ok)
    return ok


def fill(d: Dispatcher, data: bytes, pieces: range) -> None:
    """Pieces we already have before the test's peers arrive."""
    for i in pieces:
        w = d.torrent.begin_piece(i)
        w.write(data[i * PIECE : (i + 1) * PIECE])
        assert w.finish()


def test_pipeline_limits_agent_3_origin_5(setup) -> None:
    d, *_ = setup
    agent, origin = FakeLink("agent"), FakeLink("origin", is_origin=True)
    d.add_peer(agent, bits(10, range(5)))
    d.add_peer(origin, Bitfield.full(10))
    assert len(agent.requests) == 3 and len(origin.requests) == 5
    assert not set(agent.requests) & set(origin.requests), "no duplicate requests before endgame"
    assert set(origin.requests) == {5, 6, 7, 8, 9}, "the origin is asked only for what no agent has"


def test_origin_done_super_seeding_gets_one_request_at_a_time(setup) -> None:
    d, *_ = setup
    agent, origin = FakeLink("agent"), FakeLink("origin", is_origin=True)
    d.config.pipeline_limit = 1
    d.add_peer(agent, Bitfield.full(10))
    d.add_peer(origin, Bitfield.full(10))
    assert len(agent.requests) == 1
    assert not origin.requests, "an origin's upload is kept for pieces no agent has"
    d.on_peer_complete(origin.peer_id)  # the origin says it has sent every piece once
    assert len(origin.requests) == 1, "then its idle upload helps, one piece at a time"
    assert not set(agent.requests) & set(origin.requests)


def test_rarest_first(setup) -> None:
    d, *_ = setup
    a, b, c = FakeLink("a"), FakeLink("b"), FakeLink("c")
    d.config.pipeline_limit = 1
    d.add_peer(b, bits(10, [0, 1, 2]))
    d.add_peer(c, bits(10, [0, 1, 2]))
    d.add_peer(a, bits(10, [0, 1, 2, 7]))
    # Pieces 0-2 are held by three peers, piece 7 by a alone: the rarest a can give.
    assert a.requests == [7]


def test_piece_flow_announces_and_completes(setup) -> None:
    d, data, _clock, done, _bad, store, _mi = setup
    a, b = FakeLink("a"), FakeLink("b")
    d.add_peer(a, Bitfield.full(10))
    d.add_peer(b, Bitfield(10))
    first = a.requests[0]
    assert deliver(d, a, first, data)
    assert first in b.announces and first not in a.announces
    for _ in range(20):
        if done:
            break
        for i in list(a.requests):
            if i not in d.torrent.have:
                deliver(d, a, i, data)
    assert done and d.torrent.complete()
    assert b.completes == 1 and a.closed == "both sides complete"
    path = store.commit(d.torrent)
    assert path.read_bytes() == data


def test_endgame_duplicates_requests(setup) -> None:
    d, data, *_ = setup
    fill(d, data, range(8))
    a, b, c = FakeLink("a"), FakeLink("b"), FakeLink("c")
    d.add_peer(a, Bitfield.full(10))
    d.add_peer(b, Bitfield.full(10))
    d.add_peer(c, Bitfield.full(10))
    assert sorted(a.requests) == [8, 9] and sorted(b.requests) == [8, 9]
    assert not c.requests, "at most endgame_copies (2) peers are asked for one piece"
    assert deliver(d, a, 8, data)
    assert b.cancels == [8] and not a.cancels, "the copy still in flight elsewhere is cancelled"
    assert not c.requests, "piece 9 is already asked of two peers"


def test_timeout_moves_request_to_another_peer(setup) -> None:
    d, _data, clock, *_ = setup
    d.config.pipeline_limit = 1
    d.config.endgame_threshold = 0
    slow, fast = FakeLink("slow"), FakeLink("fast")
    d.add_peer(slow, bits(10, [4]))
    assert slow.requests == [4]
    d.add_peer(fast, bits(10, [4]))
    assert fast.requests == [], "piece 4 is already requested from slow"
    clock.advance(3.9)
    d.tick()
    assert fast.requests == []
    clock.advance(0.2)
    d.tick()
    assert fast.requests == [4]
    assert slow.requests == [4], "a timed-out piece is not re-requested from the same peer"
    assert slow.cancels == [4], "the stalled peer is told to drop it"


def test_requests_queued_behind_progress_do_not_expire(setup) -> None:
    d, _data, clock, *_ = setup
    d.config.pipeline_limit = 2
    d.config.endgame_threshold = 0
    busy, other = FakeLink("busy"), FakeLink("other")
    d.add_peer(busy, bits(10, [4, 5]))
    d.add_peer(other, bits(10, [4, 5]))
    assert sorted(busy.requests) == [4, 5] and not other.requests
    for _ in range(3):  # busy keeps streaming pieces (to us) every 3 s
        clock.advance(3)
        d.on_progress(busy.peer_id)
        d.tick()
    assert not other.requests and not busy.cancels, "a peer making progress keeps its queue"
    clock.advance(4 * 8)
    d.tick()
    assert sorted(other.requests) == [4, 5], "but not forever"


def test_error_reply_marks_piece_invalid_for_that_peer(setup) -> None:
    d, *_ = setup
    d.config.pipeline_limit = 1
    a, b = FakeLink("a"), FakeLink("b")
    d.add_peer(a, bits(10, [3]))
    d.on_error(a.peer_id, 3)
    assert a.requests == [3]
    d.add_peer(b, bits(10, [3]))
    assert b.requests == [3]


def test_corrupt_piece_reports_and_drops_peer(setup) -> None:
    d, _data, _clock, _done, bad, *_ = setup
    evil = FakeLink("evil")
    d.add_peer(evil, Bitfield.full(10))
    index = evil.requests[0]
    w = d.torrent.begin_piece(index)
    w.write(b"\0" * PIECE)
    assert not w.finish()
    d.on_piece(evil.peer_id, index, False)
    assert bad == [evil.peer_id] and evil.closed and evil.peer_id not in d.peers
    assert index not in d.torrent.have


def test_serving_requests_and_idle_detection(setup) -> None:
    d, data, clock, *_ = setup
    w = d.torrent.begin_piece(0)
    w.write(data[:PIECE])
    assert w.finish()
    leech = FakeLink("leech")
    d.add_peer(leech, Bitfield(10))
    d.on_request(leech.peer_id, 0)
    d.on_request(leech.peer_id, 1)
    assert leech.sent == [0] and leech.errors == [1]
    clock.advance(31)
    assert d.idle_peers(30) == [leech.peer_id]


def test_download_resumes_from_status(tmp_path: Path, setup) -> None:
    d, data, _clock, _done, _bad, store, mi = setup
    for i in (0, 5):
        w = d.torrent.begin_piece(i)
        w.write(data[i * PIECE : (i + 1) * PIECE])
        assert w.finish()
    d.torrent.close()
    again = store.open_download(mi)
    assert again.have.indices() == [0, 5]


def test_token_bucket() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=1000, burst=500, clock=clock)
    assert bucket.consume(500) == 0
    assert bucket.consume(250) == pytest.approx(0.25)
    clock.advance(0.25)
    assert bucket.delay() == 0
    clock.advance(10)
    assert bucket.tokens <= 500 or bucket.consume(0) == 0


def seeding_torrent(tmp_path: Path, pieces: int) -> Any:
    """A complete blob of *pieces* pieces in a fresh store, as the torrent an origin seeds."""
    data = os.urandom(PIECE * pieces)
    src = tmp_path / "blob"
    src.write_bytes(data)
    mi = generate(src, Digest.of_bytes(data), PIECE)
    store = PieceStore(CAStore(tmp_path / "cas"))
    tmp = store.cas.temp_path()
    tmp.write_bytes(data)
    store.cas.ingest(tmp, mi.digest)
    return store.seed(mi)


def test_super_seeding_reveals_distinct_pieces(tmp_path: Path) -> None:
    config = DispatchConfig(super_seed=True, super_seed_window=3)
    d = Dispatcher(seeding_torrent(tmp_path, 10), Clock(), config, rng=random.Random(2))
    assert d.advertised().count() == 0, "a super-seeder claims nothing in its handshake"
    a, b, c = FakeLink("a"), FakeLink("b"), FakeLink("c")
    for link in (a, b, c):
        d.add_peer(link, Bitfield(10))
    shown = a.announces + b.announces + c.announces
    assert len(a.announces) == 3 and len(shown) == 9 and len(set(shown)) == 9, "each piece shown once"
    first = a.announces[0]
    d.on_request(a.peer_id, first)
    assert len(a.announces) == 3, "a piece a holds alone still occupies its window"
    d.on_announce(b.peer_id, first)
    assert len(a.announces) == 4 and a.announces[3] not in shown, "once spread, a is shown an unseen piece"


def test_super_seeding_ends_once_every_piece_left(tmp_path: Path) -> None:
    config = DispatchConfig(super_seed=True, super_seed_window=2)
    d = Dispatcher(seeding_torrent(tmp_path, 4), Clock(), config)
    a, b = FakeLink("a"), FakeLink("b")
    d.add_peer(a, Bitfield(4))
    d.add_peer(b, Bitfield(4))
    for index in range(3):
        d.on_request(a.peer_id, index)
    assert d.super_seed and not a.completes
    d.on_request(b.peer_id, 3)
    assert not d.super_seed, "every piece has been sent once"
    assert a.completes == b.completes == 1, "peers learn they may ask for anything"
    assert d.advertised().complete(), "newcomers see a full bitfield"


def test_many_agent_peers_get_one_request_each(setup) -> None:
    d, *_ = setup
    peers = [FakeLink(f"p{i}") for i in range(4)]
    d.add_peer(peers[0], Bitfield.full(10))
    assert len(peers[0].requests) == 3, "one peer: the whole pipeline"
    for link in peers[1:]:
        d.add_peer(link, Bitfield(10))
    for link in peers[1:]:
        d.on_peer_complete(link.peer_id)
    # request_budget 6 over 4 peers: one outstanding request each from now on.
    assert [len(link.requests) for link in peers[1:]] == [1, 1, 1]


def test_piece_waiting_at_the_origin_moves_to_an_agent_that_has_it(setup) -> None:
    d, _data, _clock, *_ = setup
    d.config.endgame_threshold = 0
    origin, agent = FakeLink("origin", is_origin=True), FakeLink("agent")
    d.add_peer(origin, Bitfield.full(10))
    d.add_peer(agent, Bitfield(10))
    asked = origin.requests[-1]
    d.on_payload(origin.peer_id, origin.requests[0])  # the origin is busy with its first piece
    d.on_announce(agent.peer_id, asked)
    assert agent.requests == [asked], "the agent now has a piece queued at the origin"
    d.on_payload(agent.peer_id, asked)
    assert origin.cancels == [asked], "the origin drops it once the agent starts sending"
    assert agent.peer_id in d.pending[asked] and origin.peer_id not in d.pending[asked]
    d.on_announce(agent.peer_id, origin.requests[0])
    assert agent.requests == [asked], "a piece the origin is already sending stays there"


def test_endgame_keeps_both_copies_streaming(setup) -> None:
    d, data, *_ = setup
    fill(d, data, range(9))
    a, b = FakeLink("a"), FakeLink("b")
    d.add_peer(a, Bitfield.full(10))
    d.add_peer(b, Bitfield.full(10))
    assert a.requests == b.requests == [9]
    d.on_payload(a.peer_id, 9)
    assert not b.cancels, "in the endgame a slow first sender does not stop the second"
    slow, fast = d.torrent.begin_piece(9), d.torrent.begin_piece(9)
    assert slow is not None and fast is not None, "both copies are received"
    fast.write(data[9 * PIECE :])
    assert fast.finish() is True
    slow.write(data[9 * PIECE :])
    assert slow.finish() is None, "the later copy is a duplicate"
    assert d.torrent.read(9, 0, PIECE) == data[9 * PIECE :]
