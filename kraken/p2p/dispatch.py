"""Per-blob piece exchange with the connected peers: what to request from whom, and when.

The dispatcher holds no sockets: it talks to connections through the small
:class:`~kraken.p2p.peer.PeerLink` interface and reads time from an injected clock, so tests
drive it with ``task.Clock``.

Rules (defaults from the issue): at most ``pipeline_limit`` (3) outstanding requests per
agent peer and ``origin_pipeline_limit`` (5) per origin; with many agent peers each gets
``request_budget`` (6) / peers of them, at least one, so pieces are bound to a peer only
when it is about to send them. Pieces are chosen rarest first among those the peer has; a
piece is requested from one peer at a time until only ``endgame_threshold`` (3) pieces are
missing, then from ``endgame_copies`` (2). A piece waiting at an origin is asked of an agent
peer that has it meanwhile, and the origin's request is cancelled once the agent starts
sending. A request expires after ``max(min_timeout, timeout_per_mib * piece MiB)`` if its peer
has sent no piece bytes in that time, or after ``stuck_factor`` times that in any case; it is
cancelled there and goes to another peer. Requests still in flight elsewhere when a piece
arrives (endgame) are cancelled too, so a peer busy sending to us is not cut short.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from kraken.p2p.bitfield import Bitfield
from kraken.p2p.peer import PeerLink
from kraken.p2p.storage import Torrent


@dataclass
class DispatchConfig:
    pipeline_limit: int = 3
    origin_pipeline_limit: int = 5
    request_budget: int = 6
    endgame_threshold: int = 3
    endgame_copies: int = 2
    piece_request_min_timeout: float = 4.0
    piece_request_timeout_per_mib: float = 4.0
    rarest_first: bool = True
    stuck_factor: float = 8.0
    super_seed: bool = False
    super_seed_window: int = 2
    super_seed_spread: float = 3.0

    def timeout(self, piece_length: int) -> float:
        return max(self.piece_request_min_timeout, self.piece_request_timeout_per_mib * piece_length / 2**20)


@dataclass
class PeerState:
    link: PeerLink
    bitfield: Bitfield
    last_useful: float
    pieces_in: int = 0
    pieces_out: int = 0
    last_progress: float = 0.0
    mask: int = 0  # the bitfield as an int (bit i = piece i), for fast candidate sets
    invalid_mask: int = 0  # pieces this peer failed to give us
    inflight: int = 0  # our requests to this peer not yet answered
    done_super_seeding: bool = False

    @property
    def complete(self) -> bool:
        return self.bitfield.complete()


class Dispatcher:
    def __init__(
        self,
        torrent: Torrent,
        clock: IReactorTime,
        config: DispatchConfig | None = None,
        on_complete: Callable[[], None] | None = None,
        on_bad_peer: Callable[[bytes, str], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.torrent = torrent
        self.clock = clock
        self.config = config or DispatchConfig()
        self.on_complete = on_complete
        self.on_bad_peer = on_bad_peer
        self.rng = rng or random.Random()
        self.peers: dict[bytes, PeerState] = {}
        self.pending: dict[int, dict[bytes, float]] = {}
        self.availability = [0] * torrent.mi.num_pieces
        self.agent_availability = [0] * torrent.mi.num_pieces
        self._have_mask = _mask(torrent.have.indices())
        self._have_count = torrent.have.count()
        self.pending_mask = 0
        self.streaming: dict[int, bytes] = {}  # piece -> the peer sending it to us right now
        self.agent_mask = 0  # pieces some connected agent has
        self.last_activity = clock.seconds()
        self.completed = torrent.complete()
        # Super-seeding (origins): show each peer only a few pieces, those handed out least,
        # so the origin's upload goes to pieces the swarm lacks instead of duplicates.
        self.super_seed = self.config.super_seed and self.completed
        self.reveal_count = [0] * torrent.mi.num_pieces
        self.revealed: dict[bytes, dict[int, float]] = {}
        self.never_sent = set(range(torrent.mi.num_pieces)) if self.super_seed else set()

    def advertised(self, peer_id: bytes | None = None) -> Bitfield:
        """The bitfield to put in our handshake to *peer_id*."""
        if self.super_seed:
            return Bitfield(self.torrent.mi.num_pieces)
        return self.torrent.have.copy()

    # -- peers ------------------------------------------------------------------------------
    def add_peer(self, link: PeerLink, bitfield: Bitfield) -> None:
        if link.peer_id in self.peers:
            self.remove_peer(link.peer_id)
        now = self.clock.seconds()
        indices = bitfield.indices()
        state = PeerState(link, bitfield.copy(), now, last_progress=now, mask=_mask(indices))
        self.peers[link.peer_id] = state
        for i in indices:
            self.availability[i] += 1
            if not link.is_origin:
                self.agent_availability[i] += 1
        if not link.is_origin:
            self.agent_mask |= state.mask
        if self.completed and state.complete:
            link.close("both sides complete")
            return
        if self.super_seed:
            self.revealed[link.peer_id] = {}
            self._reveal(state)
        self._fill(state)

    def remove_peer(self, peer_id: bytes) -> None:
        state = self.peers.pop(peer_id, None)
        self.revealed.pop(peer_id, None)
        if state is None:
            return
        for i in state.bitfield.indices():
            self.availability[i] -= 1
            if not state.link.is_origin:
                self.agent_availability[i] -= 1
                if not self.agent_availability[i]:
                    self.agent_mask &= ~(1 << i)
        for index in [i for i, p in self.streaming.items() if p == peer_id]:
            del self.streaming[index]
        for index in [i for i, who in self.pending.items() if peer_id in who]:
            self._drop_request(index, peer_id)
        self._fill_all()

    # -- events from a peer ------------------------------------------------------------------
    def on_request(self, peer_id: bytes, index: int) -> None:
        state = self.peers.get(peer_id)
        if state is None:
            return
        if index not in self.torrent.have:
            state.link.send_error(index, 0, "piece not available")
            return
        state.link.send_piece(index)
        state.pieces_out += 1
        state.last_useful = self.last_activity = self.clock.seconds()
        # The requester will have it soon; do not count it as missing there.
        self._peer_has(state, index)
        if self.super_seed:
            shown = self.revealed.get(peer_id)
            if shown is not None and index in shown:
                shown[index] = self.clock.seconds()
            self.never_sent.discard(index)
            if not self.never_sent:
                self._end_super_seeding()
                return
            self._reveal(state)

    def _end_super_seeding(self) -> None:
        """Every piece has left once: from now on serve like any seeder, so the tail of the
        swarm can use this host's upload instead of waiting on the few agents holding the
        newest pieces."""
        self.super_seed = False
        self.revealed.clear()
        for state in self.peers.values():
            state.link.send_complete()

    def on_announce(self, peer_id: bytes, index: int) -> None:
        state = self.peers.get(peer_id)
        if state is None or not 0 <= index < self.torrent.mi.num_pieces:
            return
        self._peer_has(state, index)
        if self.super_seed:
            # Someone else holding the piece may free the window of whoever we showed it to.
            for pid, shown in self.revealed.items():
                if index in shown and pid in self.peers:
                    self._reveal(self.peers[pid])
            self._reveal(state)
        self._fill(state)

    def on_peer_complete(self, peer_id: bytes) -> None:
        state = self.peers.get(peer_id)
        if state is None:
            return
        for i in range(self.torrent.mi.num_pieces):
            self._peer_has(state, i)
        state.done_super_seeding = state.link.is_origin
        if self.completed:
            state.link.close("both sides complete")
        else:
            self._fill(state)

    def on_error(self, peer_id: bytes, index: int) -> None:
        state = self.peers.get(peer_id)
        if state is None:
            return
        state.invalid_mask |= 1 << index
        self._drop_request(index, peer_id)
        self._fill_all()

    def on_payload(self, peer_id: bytes, index: int) -> None:
        """*peer_id* started sending piece *index*: any other peer asked for it may drop it."""
        state = self.peers.get(peer_id)
        if state is None:
            return
        state.last_progress = self.clock.seconds()
        self.streaming[index] = peer_id
        if self.missing_count() <= self.config.endgame_threshold:
            return  # the endgame asks several peers on purpose
        for other in [p for p in self.pending.get(index, {}) if p != peer_id]:
            self._drop_request(index, other)
            if other in self.peers:
                self.peers[other].link.send_cancel(index)
                self._fill(self.peers[other])

    def on_piece(self, peer_id: bytes, index: int, ok: bool | None) -> None:
        """A piece from *peer_id* arrived: verified (True), corrupt (False) or a duplicate (None)."""
        state = self.peers.get(peer_id)
        if self.streaming.get(index) == peer_id:
            del self.streaming[index]
        self._drop_request(index, peer_id)
        if ok is False:
            if self.on_bad_peer is not None:
                self.on_bad_peer(peer_id, f"piece {index} failed its hash check")
            if state is not None:
                state.link.close(f"sent a corrupt piece {index}")
                self.remove_peer(peer_id)
            return
        now = self.clock.seconds()
        if state is not None:
            state.last_useful = state.last_progress = now
        if ok:
            self.last_activity = now
            if state is not None:
                state.pieces_in += 1
            self._have_mask |= 1 << index
            self._have_count += 1
            for other in self._clear_pending(index):
                if other in self.peers:
                    self.peers[other].link.send_cancel(index)
            for pid, other_state in self.peers.items():
                if pid != peer_id and index not in other_state.bitfield:
                    other_state.link.send_announce(index)
            if self.torrent.complete():
                self._completed()
                return
        self._fill_all()

    def on_progress(self, peer_id: bytes) -> None:
        """Piece bytes from *peer_id* arrived: it is making progress."""
        state = self.peers.get(peer_id)
        if state is not None:
            state.last_progress = self.clock.seconds()

    # -- timers -------------------------------------------------------------------------------
    def tick(self) -> None:
        """Expire requests to stalled peers and hand their pieces to other peers."""
        now = self.clock.seconds()
        timeout = self.config.timeout(self.torrent.mi.piece_length)
        stuck = timeout * self.config.stuck_factor
        expired = []
        for index, who in self.pending.items():
            for peer_id, asked in who.items():
                state = self.peers.get(peer_id)
                idle = now - state.last_progress if state is not None else stuck
                if now - asked >= stuck or (now - asked >= timeout and idle >= timeout):
                    expired.append((index, peer_id))
        for index, peer_id in expired:
            self._drop_request(index, peer_id)
            if peer_id in self.peers:
                self.peers[peer_id].invalid_mask |= 1 << index
                self.peers[peer_id].link.send_cancel(index)
        if expired:
            self._fill_all()
        if self.super_seed:
            for state in list(self.peers.values()):
                self._reveal(state)

    def idle_peers(self, idle: float) -> list[bytes]:
        now = self.clock.seconds()
        return [p for p, s in self.peers.items() if now - s.last_useful >= idle and not s.inflight]

    # -- internals ------------------------------------------------------------------------------
    def _reveal(self, state: PeerState) -> None:
        """Show *state*'s peer more pieces while fewer than ``super_seed_window`` are unpropagated.

        A piece shown to a peer stays "unpropagated" until the peer has it and, when other
        peers are connected, one of them has it too (or ``super_seed_spread`` seconds passed
        since it was asked for): the origin feeds each peer new pieces only as fast as the
        swarm spreads them, so it sends each piece about once.
        """
        shown = self.revealed.get(state.link.peer_id)
        if shown is None:
            return
        now = self.clock.seconds()
        others = len(self.peers) > 1
        waiting = 0
        for i, asked in shown.items():
            if i not in state.bitfield:
                waiting += 1
            elif others and self.availability[i] < 2 and now - asked < self.config.super_seed_spread:
                waiting += 1
        want = self.config.super_seed_window - waiting
        if want <= 0:
            return
        options = [i for i in range(self.torrent.mi.num_pieces) if i not in shown and i not in state.bitfield]
        self.rng.shuffle(options)
        options.sort(key=lambda i: self.reveal_count[i])
        for index in options[:want]:
            shown[index] = now
            self.reveal_count[index] += 1
            state.link.send_announce(index)

    def _peer_has(self, state: PeerState, index: int) -> None:
        if state.bitfield.set(index):
            state.mask |= 1 << index
            self.availability[index] += 1
            if not state.link.is_origin:
                self.agent_availability[index] += 1
                self.agent_mask |= 1 << index

    def have_mask(self) -> int:
        """Our pieces as an int; rebuilt if the torrent gained pieces behind our back."""
        have = self.torrent.have
        if have.count() != self._have_count:
            self._have_mask, self._have_count = _mask(have.indices()), have.count()
        return self._have_mask

    def _drop_request(self, index: int, peer_id: bytes) -> None:
        who = self.pending.get(index)
        if who is not None and who.pop(peer_id, None) is not None:
            if peer_id in self.peers:
                self.peers[peer_id].inflight -= 1
            if not who:
                del self.pending[index]
                self.pending_mask &= ~(1 << index)

    def _clear_pending(self, index: int) -> dict[bytes, float]:
        """Forget every request for *index*; returns who had been asked."""
        who = self.pending.pop(index, {})
        self.pending_mask &= ~(1 << index)
        for peer_id in who:
            if peer_id in self.peers:
                self.peers[peer_id].inflight -= 1
        return who

    def _limit(self, state: PeerState) -> int:
        if state.link.is_origin:
            return self.config.origin_pipeline_limit
        # With several agent peers their streams keep our link busy between pieces; deep queues
        # at each would only bind pieces early to peers that may be slow to send them.
        share = self.config.request_budget // max(1, len(self.peers))
        return min(self.config.pipeline_limit, max(1, share))

    def missing_count(self) -> int:
        return self.torrent.mi.num_pieces - self.torrent.have.count()

    def _candidates(self, state: PeerState, slots: int) -> list[int]:
        endgame = self.missing_count() <= self.config.endgame_threshold
        wanted = state.mask & ~self.have_mask() & ~state.invalid_mask
        if endgame:
            pid, copies = state.link.peer_id, self.config.endgame_copies
            options = [
                i for i in _indices(wanted)
                if len(who := self.pending.get(i, {})) < copies and pid not in who
            ]
        else:
            fresh = wanted & ~self.pending_mask
            if state.link.is_origin:
                # Spare the origin's upload: ask it only for pieces no connected agent can give.
                # Once it has sent every piece (super-seeding over) its upload would idle, so
                # then it may serve the rest, one piece at a time.
                unique = fresh & ~self.agent_mask
                if unique:
                    fresh = unique
                elif not state.done_super_seeding or state.inflight:
                    return []
                else:
                    slots = 1
            chosen = self._pick(_indices(fresh), slots)
            if len(chosen) < slots and not state.link.is_origin:
                chosen += self._asked_of_origins(wanted & self.pending_mask)[: slots - len(chosen)]
            return chosen
        return self._pick(options, slots)

    def _pick(self, options: list[int], slots: int) -> list[int]:
        if not options:
            return []
        if self.config.rarest_first:
            self.rng.shuffle(options)
            options.sort(key=self.availability.__getitem__)
            return options[:slots]
        return self.rng.sample(options, min(slots, len(options)))

    def _asked_of_origins(self, asked: int) -> list[int]:
        """Of the pieces in *asked* (a mask of requested pieces an agent peer has), those
        waiting at an origin only, which that agent peer can now give instead.

        A piece asked of the origin while no agent had it stays queued there behind the
        origin's other uploads; once an agent has it, the agent serves it and the origin's
        copy is cancelled as soon as the agent starts sending (:meth:`on_payload`).
        """
        moved = []
        for i in _indices(asked):
            who = self.pending[i]
            if i not in self.streaming and all(p in self.peers and self.peers[p].link.is_origin for p in who):
                moved.append(i)
        return moved

    def _fill(self, state: PeerState) -> None:
        if self.completed:
            return
        slots = self._limit(state) - state.inflight
        if slots <= 0:
            return
        now = self.clock.seconds()
        for index in self._candidates(state, slots):
            self.pending.setdefault(index, {})[state.link.peer_id] = now
            self.pending_mask |= 1 << index
            state.inflight += 1
            state.link.send_request(index)

    def _fill_all(self) -> None:
        for state in list(self.peers.values()):
            self._fill(state)

    def _completed(self) -> None:
        self.completed = True
        self.pending.clear()
        self.pending_mask = 0
        for state in self.peers.values():
            state.inflight = 0
        for state in list(self.peers.values()):
            if state.complete:
                state.link.close("both sides complete")
            else:
                state.link.send_complete()
        if self.on_complete is not None:
            self.on_complete()


def _mask(indices: list[int]) -> int:
    mask = 0
    for i in indices:
        mask |= 1 << i
    return mask


def _indices(mask: int) -> list[int]:
    """The set bits of *mask*, lowest first."""
    return [i for i, bit in enumerate(reversed(f"{mask:b}")) if bit == "1"] if mask > 0 else []
