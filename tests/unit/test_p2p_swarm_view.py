"""The scheduler's swarm view (what dashboards show): progress and pieces per peer, both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.unit.test_p2p_scheduler import PIECE, Host, blob, dial

__all__ = ["blob"]


def test_swarm_view_counts_pieces_per_peer_on_both_sides(tmp_path: Path, blob: Any) -> None:
    mi, data = blob
    seeder = Host(tmp_path, "s", mi, data)
    leecher = Host(tmp_path, "l", mi, None)
    ctl = leecher.scheduler.add_torrent(leecher.store.open_download(mi), "ns")
    before = leecher.scheduler.swarm_view()
    assert before["peer_id"] == leecher.scheduler.peer_id.hex()
    [fresh] = before["torrents"]
    assert (fresh["have"], fresh["pieces"], fresh["complete"], fresh["peers"]) == (0, 8, False, [])
    assert fresh["piece_from"] == [None] * 8
    assert fresh["size"] == PIECE * 7 + 100 and fresh["digest"] == str(mi.digest)

    done = leecher.scheduler.wait(ctl)
    _, _, pump = dial(leecher, seeder, ctl)
    for _ in range(200):
        pump.flush()
        if done.called:
            break
    assert done.called

    [got] = leecher.scheduler.swarm_view()["torrents"]
    assert got["have"] == 8 and got["complete"] is True
    [peer] = got["peers"]
    assert peer["peer_id"] == seeder.scheduler.peer_id.hex()
    assert (peer["received"], peer["sent"], peer["origin"]) == (8, 0, False)
    assert got["from_agents"] == 8 and got["from_origins"] == 0
    assert got["piece_from"] == [seeder.scheduler.peer_id.hex()] * 8

    [seeded] = seeder.scheduler.swarm_view()["torrents"]
    [to] = seeded["peers"]
    assert to["peer_id"] == leecher.scheduler.peer_id.hex()
    assert (to["sent"], to["received"]) == (8, 0)
    assert seeded["piece_from"] == [""] * 8  # the seeder had every piece already
