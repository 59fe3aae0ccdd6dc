"""A 3-level tree of real kraken-state processes: a top, two sub-masters, three leaves.

Cfg set at the top reaches every leaf and the leaves' Dsc comes back to the top through the
sub-masters; the top shows each node's path. Killing a sub-master makes its leaves phone home
to their fallback (the top), which sees them again and drives them directly; restarting the top
loses nothing (Cfg from its database, Dsc learned again from the tree)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kraken.state.client import StateClient
from tests.integration.state_rig import PARENT_ID, client, issue_node_cert, state_config, wait_for
from tests.support import ServerProcess, free_ports

TOP = PARENT_ID
SUBS = {"s1": "5ab00000-0000-0000-0000-000000000001", "s2": "5ab00000-0000-0000-0000-000000000002"}
LEAVES = {  # name: (id, sub-master)
    "l1a": ("1eaf0000-0000-0000-0000-00000000001a", "s1"),
    "l1b": ("1eaf0000-0000-0000-0000-00000000001b", "s1"),
    "l2a": ("1eaf0000-0000-0000-0000-00000000002a", "s2"),
}
TIMERS = {"hello": 0.3, "dead": 1.5}


def kraken(pki: Path, tmp: Path, name: str, node_id: str, **state: Any) -> dict[str, Any]:
    issue_node_cert(pki, name)
    return state_config(pki, tmp / name, cert=name, id=node_id, modules=["freebusy"], **TIMERS, **state)


def dsc(api: StateClient, node_id: str) -> dict[str, Any]:
    return dict(api.get(f"/dsc/node/{node_id}"))


def all_leaves(api: StateClient, field: str, value: str) -> bool:
    return all(dsc(api, node_id)[field] == value for node_id, _ in LEAVES.values())


def set_busy(api: StateClient, node_ids: list[str], busy: str) -> None:
    nodes = [api.get(f"/cfg/node/{n}") for n in node_ids]
    for n in nodes:
        n["busy"] = busy
    api.put("/cfg/nodes", {"nodes": nodes})


def test_three_level_tree(pki: Path, tmp_path: Path, servers: ServerProcess.Pool) -> None:
    top_port, s1_port, s2_port = free_ports(3)
    sub_ports = {"s1": s1_port, "s2": s2_port}
    top_config = state_config(
        pki, tmp_path / "top", modules=["freebusy"], sync_listen=[f"tls:tcp:{top_port}:interface=127.0.0.1"],
        **TIMERS,
    )
    top_proc = servers.start("kraken-state", top_config, name="top")
    top = client(pki, top_proc)
    nodes = [{"id": i, "nodename": n, "parentId": TOP, "runState": "SYNC"} for n, i in SUBS.items()]
    nodes += [
        {"id": i, "nodename": n, "parentId": SUBS[sub], "runState": "SYNC"} for n, (i, sub) in LEAVES.items()
    ]
    top.post("/cfg/nodes", {"nodes": nodes})

    subs: dict[str, ServerProcess] = {}
    for name, node_id in SUBS.items():
        config = kraken(
            pki, tmp_path, name, node_id, parent=f"127.0.0.1:{top_port}", submaster=True,
            sync_listen=[f"tls:tcp:{sub_ports[name]}:interface=127.0.0.1"],
        )
        subs[name] = servers.start("kraken-state", config, name=name)
    leaves: dict[str, StateClient] = {}
    for name, (node_id, sub) in LEAVES.items():
        config = kraken(
            pki, tmp_path, name, node_id, parent=f"127.0.0.1:{sub_ports[sub]}",
            fallback_parents=[f"127.0.0.1:{top_port}"],
        )
        leaves[name] = client(pki, servers.start("kraken-state", config, name=name))

    # Every node of the tree is SYNC at the top, the leaves' Dsc relayed by their sub-masters.
    wait_for(lambda: all_leaves(top, "runState", "SYNC"), what="every leaf SYNC at the top")
    assert all(dsc(top, i)["runState"] == "SYNC" for i in SUBS.values())
    l1a = LEAVES["l1a"][0]
    tree = top.get(f"/tree/node/{l1a}")
    assert tree["path"] == [TOP, SUBS["s1"], l1a] and tree["names"][1:] == ["s1", "l1a"]
    assert tree["syncedVia"] == SUBS["s1"]
    assert client(pki, subs["s1"]).get(f"/tree/node/{l1a}")["path"] == [TOP, SUBS["s1"], l1a]

    # A Cfg change at the top reaches the leaves; each acts and its Dsc comes back to the top.
    # (FREE is Busy's zero value, "don't care" in Cfg, so only BUSY can be asked for.)
    l1b, l2a = LEAVES["l1b"][0], LEAVES["l2a"][0]
    set_busy(top, [l1a, l2a], "BUSY")
    for name in ("l1a", "l2a"):
        node_id = LEAVES[name][0]
        wait_for(lambda name=name, node_id=node_id: dsc(leaves[name], node_id)["busy"] == "BUSY",
                 what=f"{name} to act on its Cfg")
    wait_for(lambda: dsc(top, l1a)["busy"] == dsc(top, l2a)["busy"] == "BUSY", what="Dsc back at the top")
    assert dsc(top, l1b)["busy"] == "FREE"

    # Kill a sub-master: its leaves phone home to the top, which sees them and drives them directly.
    subs["s1"].kill()
    wait_for(lambda: dsc(top, SUBS["s1"])["runState"] == "ERROR", what="s1 marked ERROR")
    wait_for(lambda: top.get(f"/tree/node/{l1a}")["syncedVia"] == l1a, what="l1a to re-parent to the top")
    wait_for(lambda: all_leaves(top, "runState", "SYNC"), what="the re-parented leaves SYNC at the top")
    set_busy(top, [l1b], "BUSY")
    wait_for(lambda: dsc(leaves["l1b"], l1b)["busy"] == "BUSY", what="Cfg to reach l1b directly")
    wait_for(lambda: dsc(top, l1b)["busy"] == "BUSY", what="l1b's Dsc at the top")

    # Restart the top: Cfg comes from its database, Dsc is learned again from the tree.
    top_proc.stop()
    top_proc.start()
    top = client(pki, top_proc)
    cfg = {n["id"]: n for n in top.get("/cfg/nodes")["nodes"]}
    assert all(cfg[i]["busy"] == "BUSY" for i in (l1a, l1b, l2a)) and set(SUBS.values()) <= set(cfg)
    wait_for(lambda: all_leaves(top, "runState", "SYNC"), what="the tree to phone home to the new top")
    wait_for(lambda: all_leaves(top, "busy", "BUSY"), what="every leaf's Dsc learned again")
    wait_for(lambda: dsc(top, SUBS["s2"])["runState"] == "SYNC", what="s2 back")
    assert top.get(f"/tree/node/{l2a}")["syncedVia"] == SUBS["s2"]
