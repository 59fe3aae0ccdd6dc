"""Parent and two children as real twistd processes: phone home over mutual TLS, Cfg down,
Dsc up, a killed child goes ERROR and comes back to SYNC, a child re-phones home after its
parent restarts, and a child whose certificate names another node is refused."""

from __future__ import annotations

from pathlib import Path

from kraken.state.client import StateClient
from tests.integration.state_rig import PARENT_ID, client, issue_node_cert, state_config, wait_for
from tests.support import ServerProcess, free_port

KIDS = {
    "kr1": "cccccccc-0000-0000-0000-000000000001",
    "kr2": "cccccccc-0000-0000-0000-000000000002",
}
TIMERS = {"hello": 0.3, "dead": 1.5}



def start_parent(pki: Path, tmp: Path, servers: ServerProcess.Pool, name: str, sync_port: int) -> StateClient:
    config = state_config(
        pki, tmp / "parent", sync_listen=[f"tls:tcp:{sync_port}:interface=127.0.0.1"], **TIMERS
    )
    return client(pki, servers.start("kraken-state", config, name=name))


def start_child(
    pki: Path, tmp: Path, servers: ServerProcess.Pool, name: str, sync_port: int, cert: str | None = None
) -> tuple[ServerProcess, StateClient]:
    issue_node_cert(pki, cert or name)
    config = state_config(
        pki,
        tmp / name,
        cert=cert or name,
        id=KIDS[name],
        modules=["freebusy"],
        parent=f"127.0.0.1:{sync_port}",
        **TIMERS,
    )
    proc = servers.start("kraken-state", config, name=f"{name}-{len(servers.started)}")
    return proc, client(pki, proc)


def add_children(parent: StateClient) -> None:
    parent.post(
        "/cfg/nodes",
        {
            "nodes": [
                {"id": node_id, "nodename": name, "parentId": PARENT_ID, "runState": "SYNC"}
                for name, node_id in KIDS.items()
            ]
        },
    )


def run_state(api: StateClient, node_id: str) -> str:
    return str(api.get(f"/dsc/node/{node_id}")["runState"])


def test_parent_and_two_children(pki: Path, tmp_path: Path, servers: ServerProcess.Pool) -> None:
    port = free_port()
    parent = start_parent(pki, tmp_path, servers, "parent", port)
    add_children(parent)
    kids = {name: start_child(pki, tmp_path, servers, name, port) for name in KIDS}
    for name, node_id in KIDS.items():
        wait_for(lambda node_id=node_id: run_state(parent, node_id) == "SYNC", what=f"{name} to phone home")
    kr1 = kids["kr1"][1]
    assert kr1.get(f"/cfg/node/{KIDS['kr1']}")["parentId"] == PARENT_ID  # the child got its Cfg

    # Intent flows down, observation flows up.
    node = parent.get(f"/cfg/node/{KIDS['kr1']}")
    node["busy"] = "BUSY"
    parent.put("/cfg/node", node)
    wait_for(lambda: kr1.get(f"/cfg/node/{KIDS['kr1']}")["busy"] == "BUSY", what="Cfg to reach the child")
    wait_for(lambda: kr1.get(f"/dsc/node/{KIDS['kr1']}")["busy"] == "BUSY", what="the child to act")
    wait_for(lambda: parent.get(f"/dsc/node/{KIDS['kr1']}")["busy"] == "BUSY", what="Dsc to come back")

    # A dead child goes ERROR; started again it phones home and is SYNC again.
    kids["kr2"][0].kill()
    wait_for(lambda: run_state(parent, KIDS["kr2"]) == "ERROR", what="kr2 to be marked ERROR")
    assert run_state(parent, KIDS["kr1"]) == "SYNC"
    start_child(pki, tmp_path, servers, "kr2", port)
    wait_for(lambda: run_state(parent, KIDS["kr2"]) == "SYNC", what="kr2 to come back")


def test_child_phones_home_again_after_losing_its_parent(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    port = free_port()
    parent = start_parent(pki, tmp_path, servers, "parent", port)
    add_children(parent)
    _, kr1 = start_child(pki, tmp_path, servers, "kr1", port)
    wait_for(lambda: run_state(parent, KIDS["kr1"]) == "SYNC", what="kr1 to phone home")
    servers.started[0].kill()
    wait_for(lambda: run_state(kr1, KIDS["kr1"]) == "ERROR", what="the child to notice")
    parent = start_parent(pki, tmp_path, servers, "parent-again", port)
    wait_for(lambda: run_state(parent, KIDS["kr1"]) == "SYNC", what="the child to phone home again")
    wait_for(lambda: run_state(kr1, KIDS["kr1"]) == "SYNC", what="the child to be SYNC itself")


def test_a_certificate_for_another_node_is_refused(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    port = free_port()
    parent = start_parent(pki, tmp_path, servers, "parent", port)
    add_children(parent)
    impostor, _ = start_child(pki, tmp_path, servers, "kr2", port, cert="kr1")
    wait_for(lambda: "does not name node" in servers.started[0].log(), what="the refusal")
    assert run_state(parent, KIDS["kr2"]) == "UNKNOWN"
    assert "parent refused us" in impostor.log()
