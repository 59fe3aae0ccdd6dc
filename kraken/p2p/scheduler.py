"""The P2P scheduler of one host: its blobs, their connections, announces and timers.

One :class:`Scheduler` per process (agent or origin). It admits incoming peers (capacity per
blob, duplicate and mutual-connection limits, blacklist), dials peers the tracker hands out,
announces round-robin, closes idle connections and drops idle blobs. All time comes from the
injected reactor, so tests drive it with a ``MemoryReactorClock``.
"""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.core.digest import Digest
from kraken.core.metrics import Metrics
from kraken.p2p import wire
from kraken.p2p.bandwidth import TokenBucket
from kraken.p2p.bitfield import Bitfield
from kraken.p2p.dispatch import DispatchConfig, Dispatcher
from kraken.p2p.peer import Dialer, PeerInfo, PeerLink
from kraken.p2p.storage import Torrent
from kraken.p2p.uploads import UploadSlots

log = Logger(namespace="kraken.p2p.scheduler")


@dataclass
class SchedulerConfig:
    max_open_conn: int = 10
    max_mutual_conn: int = 10
    blacklist_duration: float = 30.0
    conn_tti: float = 30.0
    seeder_tti: float = 300.0
    seeder_announce_interval: float = 30.0
    leecher_tti: float = 300.0
    handshake_timeout: float = 5.0
    redial_after: float = 10.0
    tick_interval: float = 1.0
    announce_interval: float = 3.0
    upload_slots: int = 0
    upload_slot_overdue: float = 2.0
    send_lowat: int = 0
    tcp_congestion: str = ""
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)


class TorrentControl:
    """One blob this host exchanges: its pieces, dispatcher and connections."""

    def __init__(self, torrent: Torrent, namespace: str, dispatcher: Dispatcher, now: float) -> None:
        self.torrent = torrent
        self.namespace = namespace
        self.dispatcher = dispatcher
        self.conns: dict[bytes, PeerLink] = {}
        self.dialing: set[bytes] = set()
        self.spare: list[PeerInfo] = []  # peers of the last announce not dialled yet
        self.dial_until = 0  # dial spare peers while fewer connections than this are open
        self.refused: dict[bytes, float] = {}  # peer -> when it turned our dial away or hung up
        self.waiters: list[Deferred[Any]] = []
        self.last_read = now
        self.finished = torrent.complete()
        self.final_announce_done = self.finished
        self.announced_at = now  # of a complete blob: its last announce (re-announced while seeded)
        self.started = now
        self.from_agents = 0
        self.from_origins = 0
        self.received_from: dict[bytes, int] = {}  # verified pieces by the peer that sent them
        self.piece_from: dict[int, bytes] = {}  # piece index -> the peer that sent it
        self.sent_to: dict[bytes, int] = {}
        self.origin_peers: set[bytes] = set()

    @property
    def info_hash(self) -> bytes:
        return self.torrent.info_hash

    def open_count(self) -> int:
        return len(self.conns) + len(self.dialing)


class AnnounceRefused(Exception):
    pass


# announce(ctl, complete) -> Deferred[(list[PeerInfo], interval seconds)]
Announcer = Callable[[TorrentControl, bool], "Deferred[tuple[list[PeerInfo], float]]"]
# seed_source(namespace, digest, info_hash) -> Torrent | None, or a Deferred of it
SeedSource = Callable[[str, Digest, bytes], "Deferred[Torrent | None] | Torrent | None"]
# commit(ctl) -> (a Deferred of) the seeding torrent: verify a finished download
Committer = Callable[[TorrentControl], "Deferred[Torrent] | Torrent"]


class Scheduler:
    """The host of every peer connection (a :class:`~kraken.p2p.peer.PeerHost`); it opens
    outgoing ones through *dialer* (without one it only accepts peers)."""

    def __init__(
        self,
        reactor: IReactorTime,
        config: SchedulerConfig | None = None,
        dialer: Dialer[TorrentControl] | None = None,
        seed_source: SeedSource | None = None,
        announcer: Announcer | None = None,
        committer: Committer | None = None,
        metrics: Metrics | None = None,
        peer_id: bytes | None = None,
        egress: TokenBucket | None = None,
        ingress: TokenBucket | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.reactor = reactor
        self.dialer = dialer
        self.config = config or SchedulerConfig()
        self.seed_source = seed_source
        self.announcer = announcer
        self.committer = committer
        self.peer_id = peer_id or os.urandom(20)
        self.egress = egress
        self.uploads = UploadSlots(self.config.upload_slots, reactor, self.config.upload_slot_overdue)
        self.ingress = ingress
        self.rng = rng or random.Random()
        self.torrents: dict[bytes, TorrentControl] = {}
        self.blacklist: dict[tuple[bytes, bytes], float] = {}
        self.announce_queue: deque[bytes] = deque()
        self.interval = self.config.announce_interval
        self._announce_call: IDelayedCall | None = None
        self._tick_call: IDelayedCall | None = None
        self.running = False
        self._metrics(metrics or Metrics("p2p"))

    def _metrics(self, m: Metrics) -> None:
        self.m_pieces_in = m.counter("pieces_received", "verified pieces received", ["from_role"])
        self.m_pieces_bad = m.counter("pieces_corrupt", "pieces that failed their hash check")
        self.m_pieces_dup = m.counter("pieces_duplicate", "pieces received that we already had")
        self.m_pieces_out = m.counter("pieces_sent", "pieces sent to peers", ["to_role"])
        self.m_bytes_in = m.counter("piece_bytes_received", "piece bytes received")
        self.m_bytes_out = m.counter("piece_bytes_sent", "piece bytes sent")
        self.m_conns = m.gauge("peer_connections", "active peer connections")
        self.m_blacklisted = m.counter("peers_blacklisted", "peers blacklisted for a blob", ["reason"])

    # -- life -------------------------------------------------------------------------------
    def start(self) -> None:
        self.running = True
        self._tick_call = self.reactor.callLater(self.config.tick_interval, self._tick)
        self._schedule_announce(self.interval)

    def stop(self) -> None:
        self.running = False
        for call in (self._tick_call, self._announce_call):
            if call is not None and call.active():
                call.cancel()
        for ctl in list(self.torrents.values()):
            self._drop(ctl, RuntimeError("scheduler stopped"))

    def probe(self) -> bool:
        return self.running

    # -- torrents -------------------------------------------------------------------------------
    def add_torrent(self, torrent: Torrent, namespace: str) -> TorrentControl:
        existing = self.torrents.get(torrent.info_hash)
        if existing is not None:
            return existing
        dispatcher = Dispatcher(torrent, self.reactor, self.config.dispatch, rng=self.rng)
        ctl = TorrentControl(torrent, namespace, dispatcher, self.reactor.seconds())
        dispatcher.on_complete = lambda: self._completed(ctl)
        dispatcher.on_bad_peer = lambda pid, why: self._blacklist(pid, ctl.info_hash, "corrupt")
        self.torrents[torrent.info_hash] = ctl
        if not ctl.finished and self.announcer is not None:
            self.announce_queue.append(ctl.info_hash)
            self._announce(ctl)
        return ctl

    def add_download(self, torrent: Torrent, namespace: str) -> TorrentControl:
        """Add a download; one whose pieces are all on disk already is committed at once."""
        ctl = self.add_torrent(torrent, namespace)
        if torrent.complete() and not ctl.finished:
            self._completed(ctl)
        return ctl

    def controls_of(self, digest: Digest) -> list[TorrentControl]:
        """The blobs this host exchanges whose content is *digest*."""
        return [ctl for ctl in self.torrents.values() if ctl.torrent.digest == digest]

    def wait(self, ctl: TorrentControl) -> Deferred[Any]:
        """Fires with the seeding torrent once *ctl* is complete and verified."""
        if ctl.finished:
            return succeed(ctl.torrent)
        d: Deferred[Any] = Deferred()
        ctl.waiters.append(d)
        return d

    def remove(self, info_hash: bytes, reason: Exception | None = None) -> None:
        ctl = self.torrents.get(info_hash)
        if ctl is not None:
            self._drop(ctl, reason or RuntimeError("removed"))

    def _drop(self, ctl: TorrentControl, reason: Exception) -> None:
        self.torrents.pop(ctl.info_hash, None)
        for conn in list(ctl.conns.values()):
            conn.close("blob dropped")
        waiters, ctl.waiters = ctl.waiters, []
        for d in waiters:
            d.errback(reason)
        ctl.torrent.close()

    def _completed(self, ctl: TorrentControl) -> None:
        if self.committer is None:
            self._finished(ctl, ctl.torrent)
            return
        d = maybeDeferred(self.committer, ctl)
        d.addCallbacks(lambda seed: self._finished(ctl, seed), lambda f: self._drop(ctl, f.value))

    def _finished(self, ctl: TorrentControl, seed: Torrent) -> None:
        if not ctl.finished:
            log.info(
                "downloaded {d} in {t:.2f}s: {a} pieces from agents, {o} from origins, {c} peers",
                d=seed.digest,
                t=self.reactor.seconds() - ctl.started,
                a=ctl.from_agents,
                o=ctl.from_origins,
                c=len(ctl.conns),
            )
        old, ctl.torrent = ctl.torrent, seed
        ctl.dispatcher.torrent = seed
        if old is not seed:
            old.close()
        ctl.finished = True
        ctl.last_read = self.reactor.seconds()
        for key in [k for k in self.blacklist if k[1] == ctl.info_hash]:
            del self.blacklist[key]
        waiters, ctl.waiters = ctl.waiters, []
        for d in waiters:
            d.callback(seed)
        if self.announcer is not None:
            self._announce(ctl)

    # -- handshakes ----------------------------------------------------------------------------
    def handshake_message(self, ctl: TorrentControl, peer_id: bytes | None = None) -> bytes:
        return wire.encode_handshake(
            wire.Handshake(
                self.peer_id,
                ctl.info_hash,
                ctl.torrent.digest.hex,
                ctl.namespace,
                ctl.dispatcher.advertised(peer_id),
                tuple(ctl.conns),
            )
        )

    def _refuse(self, link: PeerLink, why: str) -> None:
        log.debug("refusing peer {peer}: {why}", peer=link.peer_id.hex()[:12], why=why)
        link.abort(wire.E_REFUSED, why)

    def accept(self, link: PeerLink, hs: wire.Handshake) -> Deferred[TorrentControl | None]:
        """Admission of an incoming peer: fires with the blob's control, or ``None`` (refused)."""
        if self._blacklisted(hs.peer_id, hs.info_hash):
            self._refuse(link, "blacklisted")
            return succeed(None)
        ctl = self.torrents.get(hs.info_hash)
        if ctl is not None:
            return succeed(self._admit(link, hs, ctl))
        if self.seed_source is None:
            self._refuse(link, "unknown blob")
            return succeed(None)
        digest = Digest.from_hex(hs.digest_hex)
        d = maybeDeferred(self.seed_source, hs.namespace, digest, hs.info_hash)

        def loaded(torrent: object) -> TorrentControl | None:
            if not isinstance(torrent, Torrent) or torrent.info_hash != hs.info_hash:
                link.abort(wire.E_UNKNOWN_BLOB, "blob not available here (yet)")
                return None
            return self._admit(link, hs, self.add_torrent(torrent, hs.namespace))

        return d.addCallback(loaded)

    def _admit(self, link: PeerLink, hs: wire.Handshake, ctl: TorrentControl) -> TorrentControl | None:
        if link.closed:
            return None
        if hs.peer_id == self.peer_id:
            self._refuse(link, "that is us")
            return None
        if hs.peer_id in ctl.conns:
            self._refuse(link, "already connected")
            return None
        if hs.peer_id in ctl.dialing and self.peer_id > hs.peer_id:
            # Both sides dialled each other at once: the lower peer id keeps its incoming one.
            self._refuse(link, "simultaneous dial")
            return None
        if ctl.open_count() >= self.config.max_open_conn:
            self._refuse(link, "at capacity for this blob")
            return None
        mutual = sum(1 for n in hs.neighbours if n in ctl.conns)
        if mutual > self.config.max_mutual_conn:
            self._refuse(link, "too many mutual connections")
            return None
        return ctl

    def activated(self, link: PeerLink, ctl: TorrentControl, bitfield: Bitfield) -> None:
        ctl.dialing.discard(link.peer_id)
        if link.peer_id in ctl.conns:
            link.close("duplicate connection")
            return
        ctl.conns[link.peer_id] = link
        self.m_conns.inc()
        ctl.dispatcher.add_peer(link, bitfield)

    def connection_lost(self, link: PeerLink, ctl: TorrentControl | None, peer: bytes) -> None:
        """*link* to *peer* ended (*ctl*: its blob, ``None`` if it never learnt one)."""
        if ctl is None:
            return
        ended = peer in ctl.dialing
        ctl.dialing.discard(peer)
        if ctl.conns.get(peer) is link:
            del ctl.conns[peer]
            self.m_conns.dec()
            ctl.dispatcher.remove_peer(peer)
            ended = True
        if ended:
            ctl.refused[peer] = self.reactor.seconds()
            self._dial_spare(ctl)

    # -- piece accounting (metrics, idleness) ---------------------------------------------------
    def piece_received(
        self, ctl: TorrentControl, from_origin: bool, index: int, ok: bool | None, peer_id: bytes = b""
    ) -> None:
        if ok:
            if from_origin:
                ctl.from_origins += 1
                ctl.origin_peers.add(peer_id)
            else:
                ctl.from_agents += 1
            ctl.received_from[peer_id] = ctl.received_from.get(peer_id, 0) + 1
            ctl.piece_from[index] = peer_id
            self.m_pieces_in.labels("origin" if from_origin else "agent").inc()
            self.m_bytes_in.inc(ctl.torrent.mi.piece_size(index))
        elif ok is None:
            self.m_pieces_dup.inc()
        else:
            self.m_pieces_bad.inc()

    def piece_sent(self, ctl: TorrentControl, to_origin: bool, index: int, peer_id: bytes = b"") -> None:
        ctl.last_read = self.reactor.seconds()
        ctl.sent_to[peer_id] = ctl.sent_to.get(peer_id, 0) + 1
        if to_origin:
            ctl.origin_peers.add(peer_id)
        self.m_pieces_out.labels("origin" if to_origin else "agent").inc()
        self.m_bytes_out.inc(ctl.torrent.mi.piece_size(index))

    def penalise(self, ctl: TorrentControl | None, peer_id: bytes, reason: str) -> None:
        if ctl is not None and peer_id:
            self._blacklist(peer_id, ctl.info_hash, "protocol")

    # -- blacklist -----------------------------------------------------------------------------
    def _blacklist(self, peer_id: bytes, info_hash: bytes, reason: str) -> None:
        log.info(
            "blacklisting peer {peer} for blob {blob} ({reason})",
            peer=peer_id.hex()[:12],
            blob=info_hash.hex()[:12],
            reason=reason,
        )
        self.m_blacklisted.labels(reason).inc()
        self.blacklist[(peer_id, info_hash)] = self.reactor.seconds() + self.config.blacklist_duration

    def _blacklisted(self, peer_id: bytes, info_hash: bytes) -> bool:
        until = self.blacklist.get((peer_id, info_hash))
        if until is None:
            return False
        if until <= self.reactor.seconds():
            del self.blacklist[(peer_id, info_hash)]
            return False
        return True

    def blacklist_view(self) -> list[dict[str, Any]]:
        now = self.reactor.seconds()
        return [
            {"peer_id": p.hex(), "info_hash": h.hex(), "remaining": round(t - now, 3)}
            for (p, h), t in self.blacklist.items()
            if t > now
        ]

    def swarm_view(self) -> dict[str, Any]:
        """What this host exchanges, for dashboards: per blob, its progress and the pieces
        received from and sent to each peer (by peer id) since the blob was added here."""
        now = self.reactor.seconds()
        return {
            "peer_id": self.peer_id.hex(),
            "torrents": [_torrent_view(ctl, now) for ctl in self.torrents.values()],
        }

    # -- dialing -------------------------------------------------------------------------------
    def connect_peers(self, ctl: TorrentControl, peers: list[PeerInfo]) -> None:
        """Dial *peers* in order for half the free connection slots of the blob, leaving the
        other half to peers that dial us; the rest of *peers* stand by to replace dials that
        fail or are refused, and connections that end. A peer that turned us away, or whose
        connection just ended, is not dialled again for ``redial_after`` seconds.

        When a whole swarm starts at once, a host that filled every slot by dialing refuses
        everyone who dials it: the hosts that announced first fill up with each other (and the
        origin) and the later ones form a second cluster joined to the first by a few links.
        """
        recently = self.reactor.seconds() - self.config.redial_after
        ctl.refused = {p: t for p, t in ctl.refused.items() if t > recently}
        free = self.config.max_open_conn - ctl.open_count()
        ctl.dial_until = ctl.open_count() + (free + 1) // 2
        ctl.spare = list(peers)
        self._dial_spare(ctl)

    def _dial_spare(self, ctl: TorrentControl) -> None:
        if ctl.finished or ctl.info_hash not in self.torrents or self.dialer is None:
            return
        recently = self.reactor.seconds() - self.config.redial_after
        while ctl.spare and ctl.open_count() < min(ctl.dial_until, self.config.max_open_conn):
            peer = ctl.spare.pop(0)
            pid = peer.peer_id
            if pid == self.peer_id or pid in ctl.conns or pid in ctl.dialing:
                continue
            if ctl.refused.get(pid, recently) > recently:
                continue
            if self._blacklisted(pid, ctl.info_hash):
                continue
            ctl.dialing.add(pid)
            log.debug("dialing {ip}:{port} for {blob}", ip=peer.ip, port=peer.port, blob=ctl.info_hash.hex())
            self._dial(ctl, peer)

    def _dial(self, ctl: TorrentControl, peer: PeerInfo) -> None:
        assert self.dialer is not None
        d = self.dialer(self, ctl, peer)

        def failed(f: Failure) -> None:
            ctl.dialing.discard(peer.peer_id)
            self._blacklist(peer.peer_id, ctl.info_hash, "dial")
            log.info("could not connect to peer {ip}:{port}: {e}", ip=peer.ip, port=peer.port, e=f.value)
            self._dial_spare(ctl)

        d.addErrback(failed)

    # -- announces -----------------------------------------------------------------------------
    def _schedule_announce(self, delay: float) -> None:
        if self.announcer is None or not self.running:
            return
        if self._announce_call is not None and self._announce_call.active():
            self._announce_call.cancel()
        self._announce_call = self.reactor.callLater(delay, self._announce_next)

    def _announce_next(self) -> None:
        self._announce_call = None
        for _ in range(len(self.announce_queue)):
            info_hash = self.announce_queue.popleft()
            ctl = self.torrents.get(info_hash)
            if ctl is None or ctl.final_announce_done:
                continue
            self.announce_queue.append(info_hash)
            if ctl.open_count() >= self.config.max_open_conn and not ctl.finished:
                log.debug("not announcing {blob}: {n} connections open, {d} dialing",
                          blob=info_hash.hex()[:12], n=len(ctl.conns), d=len(ctl.dialing))
                continue
            self._announce(ctl)
            break
        self._schedule_announce(self.interval)

    def _announce(self, ctl: TorrentControl) -> None:
        assert self.announcer is not None
        complete = ctl.finished
        d = maybeDeferred(self.announcer, ctl, complete)

        def answered(result: tuple[list[PeerInfo], float]) -> None:
            peers, interval = result
            if 0 < interval <= 60 and interval != self.interval:
                self.interval = interval
                self._schedule_announce(interval)
            if complete:
                ctl.final_announce_done = True
                ctl.announced_at = self.reactor.seconds()
                return
            self.connect_peers(ctl, peers)

        def failed(f: Failure) -> None:
            log.info("announce for {blob} failed: {e}", blob=ctl.info_hash.hex()[:12], e=f.value)

        d.addCallbacks(answered, failed)

    # -- timers --------------------------------------------------------------------------------
    def _tick(self) -> None:
        now = self.reactor.seconds()
        cfg = self.config
        self.uploads.grant()
        for ctl in list(self.torrents.values()):
            ctl.dispatcher.tick()
            for pid in ctl.dispatcher.idle_peers(cfg.conn_tti):
                conn = ctl.conns.get(pid)
                if conn is not None:
                    conn.close("idle")
            if ctl.finished:
                if not ctl.conns and now - ctl.last_read >= cfg.seeder_tti:
                    self._drop(ctl, RuntimeError("seeder idle"))
                elif (self.announcer is not None and ctl.final_announce_done
                      and now - ctl.announced_at >= cfg.seeder_announce_interval):
                    ctl.announced_at = now
                    self._announce(ctl)
            elif now - ctl.dispatcher.last_activity >= cfg.leecher_tti:
                log.warn(
                    "download of {d} stalled for {s}s; giving up", d=ctl.torrent.digest, s=cfg.leecher_tti
                )
                self._drop(ctl, TimeoutError(f"no progress for {cfg.leecher_tti:g}s"))
        self._tick_call = self.reactor.callLater(cfg.tick_interval, self._tick)


MAX_PIECE_MAP = 4096  # pieces beyond which the view leaves out who sent each one


def _piece_map(ctl: TorrentControl, pieces: int) -> list[str | None] | None:
    """Per piece: the id of the peer that sent it, ``""`` if it was here already, ``None`` if missing."""
    if pieces > MAX_PIECE_MAP:
        return None
    have = ctl.torrent.have
    return [
        ctl.piece_from[i].hex() if i in ctl.piece_from else ("" if i in have else None) for i in range(pieces)
    ]


def _torrent_view(ctl: TorrentControl, now: float) -> dict[str, Any]:
    mi = ctl.torrent.mi
    peers = set(ctl.conns) | set(ctl.received_from) | set(ctl.sent_to)
    return {
        "piece_from": _piece_map(ctl, mi.num_pieces),
        "digest": str(ctl.torrent.digest),
        "info_hash": ctl.info_hash.hex(),
        "namespace": ctl.namespace,
        "size": mi.length,
        "pieces": mi.num_pieces,
        "have": ctl.torrent.have.count(),
        "complete": ctl.finished,
        "age": round(now - ctl.started, 3),
        "from_agents": ctl.from_agents,
        "from_origins": ctl.from_origins,
        "peers": [
            {
                "peer_id": p.hex(),
                "origin": p in ctl.origin_peers or (p in ctl.conns and ctl.conns[p].is_origin),
                "connected": p in ctl.conns,
                "received": ctl.received_from.get(p, 0),
                "sent": ctl.sent_to.get(p, 0),
            }
            for p in sorted(peers)
        ],
    }
