"""Swarm page: per blob, every agent's progress, who sent it pieces, the origins' share, throughput.

Reads ``GET /x/swarm`` of every agent and origin (:meth:`kraken.p2p.scheduler.Scheduler.swarm_view`);
peers are named by matching their peer ids with the hosts that answered.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from kraken.dashboard.adapters import each
from kraken.dashboard.sources import Fetcher, Server

MAX_BLOBS = 50


HAD = -1  # a piece the host had before (a seed)
MISSING = -2


def _sources(piece_from: Any, names: dict[str, str], senders: list[str]) -> list[int] | None:
    """Per piece, the index in *senders* of the host that sent it (added there when new), or
    :data:`HAD` / :data:`MISSING`; ``None`` when the host does not say."""
    if not isinstance(piece_from, list):
        return None
    out = []
    for peer in piece_from:
        if peer is None:
            out.append(MISSING)
        elif peer == "":
            out.append(HAD)
        else:
            name = names.get(peer, "peer " + str(peer)[:8])
            if name not in senders:
                senders.append(name)
            out.append(senders.index(name))
    return out


class SwarmAdapter:
    def __init__(
        self, fetcher: Fetcher, agents: list[Server], origins: list[Server], clock: IReactorTime, history: int
    ) -> None:
        self.fetcher = fetcher
        self.servers = origins + agents
        self.clock = clock
        self.history = history
        self.held: dict[str, tuple[float, int]] = {}  # digest -> (when, bytes held by agents)
        self.rates: dict[str, deque[float]] = {}

    def _read(self, server: Server) -> Deferred[Any]:
        return self.fetcher.get_json(server, "/x/swarm")

    def collect(self) -> Deferred[dict[str, Any]]:
        return each(self.servers, self._read).addCallback(self._merge)

    def _merge(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        names = {r["peer_id"]: r["server"] for r in rows if isinstance(r.get("peer_id"), str)}
        blobs: dict[str, dict[str, Any]] = {}
        for row in rows:
            for t in row.get("torrents", [])[:MAX_BLOBS]:
                blob = blobs.setdefault(
                    t["digest"],
                    {"digest": t["digest"], "size": t["size"], "pieces": t["pieces"], "hosts": [],
                     "from_agents": 0, "from_origins": 0, "links": [], "senders": []},
                )
                blob["hosts"].append(
                    {"server": row["server"], "kind": row["kind"], "have": t["have"],
                     "complete": t["complete"],
                     "progress": round(t["have"] / t["pieces"], 4) if t["pieces"] else 1.0,
                     "piece_source": _sources(t.get("piece_from"), names, blob["senders"])}
                )
                if row["kind"] == "agent":
                    blob["from_agents"] += t["from_agents"]
                    blob["from_origins"] += t["from_origins"]
                for peer in t["peers"]:
                    if peer["received"]:
                        blob["links"].append(
                            {"from": names.get(peer["peer_id"], "peer " + peer["peer_id"][:8]),
                             "to": row["server"], "pieces": peer["received"], "origin": peer["origin"]}
                        )
        now = self.clock.seconds()
        for digest, blob in blobs.items():
            total = blob["from_agents"] + blob["from_origins"]
            blob["origin_share"] = round(blob["from_origins"] / total, 4) if total else None
            held = sum(h["have"] for h in blob["hosts"] if h["kind"] == "agent")
            piece = blob["size"] / blob["pieces"] if blob["pieces"] else 0
            before = self.held.get(digest)
            self.held[digest] = (now, held)
            if before is not None and now > before[0]:
                rate = max(0.0, (held - before[1]) * piece / (now - before[0]))
                self.rates.setdefault(digest, deque(maxlen=self.history)).append(round(rate))
            blob["throughput"] = list(self.rates.get(digest, ()))
        for gone in set(self.held) - set(blobs):  # blobs no host has any more
            self.held.pop(gone, None)
            self.rates.pop(gone, None)
        servers = [
            {k: r[k] for k in ("server", "kind", "url", "error", "unavailable") if k in r} for r in rows
        ]
        return {"servers": servers, "blobs": sorted(blobs.values(), key=lambda b: b["digest"])}
