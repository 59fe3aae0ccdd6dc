"""Groups on a Clock: inherited values (ancestors first, nearer groups win), refusals, a bulk set
tracked to completion with throttled OPERATION events, failures counted, persistence."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.task import Clock

from kraken.state import model
from kraken.state.events import Event, EventType
from kraken.state.groups import APPLY_PER_TURN, Group, group_from_json, typed_values
from kraken.state.model import ModelError, Node, PhysState
from kraken.state.modules.sim import SimPower
from kraken.state.service import StateService
from kraken.state.store import StoreError

ME = "aaaaaaaa-0000-0000-0000-000000000001"


def nid(i: int) -> str:
    return f"bbbbbbbb-0000-0000-0000-{i:012d}"


def service(tmp_path: Path | None = None, nodes: int = 4, sim: SimPower | None = None) -> StateService:
    svc = StateService(
        [sim or SimPower({"latency": 1.0, "timeout": 5})], Clock(), self_id=ME,
        db=str(tmp_path / "cfg.sqlite") if tmp_path else None,
    )
    for i in range(nodes):
        if nid(i) not in svc.store.cfg:
            n = Node(nid(i))
            n.platform, n.parent_id = "sim", ME
            svc.store.create(n)
    return svc


def test_values_are_inherited_ancestors_first_and_nearer_groups_win() -> None:
    svc = service()
    g = svc.groups
    g.put(Group("site", [], "", typed_values({"arch": "amd64", "physState": "POWER_OFF"})))
    g.put(Group("rack1", [nid(0), nid(1)], "site", typed_values({"physState": "POWER_ON"})))
    g.put(Group("gpu", [nid(1)], "", typed_values({"arch": "arm64"})))
    assert svc.store.cfg[nid(0)].arch == "amd64" and svc.store.cfg[nid(0)].phys_state is PhysState.POWER_ON
    # depth 0: gpu (arm64) and site (amd64) by name, so site wins; depth 1: rack1
    assert g.inherited(nid(1)) == {"/Arch": "amd64", "/PhysState": PhysState.POWER_ON}
    assert svc.store.cfg[nid(2)].arch == ""  # not a member
    assert g.members("site") == {nid(0), nid(1)}
    assert g.groups_of(nid(1)) == ["gpu", "rack1"]


def test_refusals_name_the_problem() -> None:
    svc = service()
    g = svc.groups
    with pytest.raises(ModelError, match="group name"):
        group_from_json("no spaces", {})
    with pytest.raises(ModelError, match="unknown field"):
        group_from_json("a", {"nodez": []})
    with pytest.raises(ModelError, match="cannot set"):
        typed_values({"parentId": ME})
    with pytest.raises(ModelError, match="not one of"):
        typed_values({"physState": "ON"})
    with pytest.raises(StoreError, match="no node"):
        g.put(Group("a", [nid(99)]))
    with pytest.raises(StoreError, match="no group"):
        g.put(Group("a", [], "missing"))
    g.put(Group("a"))
    g.put(Group("b", [], "a"))
    with pytest.raises(StoreError) as e:
        g.put(Group("a", [], "b"))
    assert e.value.code == "GROUP_CYCLE"
    with pytest.raises(StoreError) as e:
        g.delete("a")
    assert e.value.code == "GROUP_HAS_CHILDREN"
    with pytest.raises(StoreError) as e:
        g.set("b", typed_values({"physState": "POWER_ON"}))
    assert e.value.code == "EMPTY_GROUP"


def test_bulk_set_runs_to_completion_with_throttled_progress() -> None:
    sim = SimPower({"latency": 1.0, "timeout": 5})
    svc = service(nodes=4, sim=sim)
    svc.startService()
    clock = svc.clock
    assert isinstance(clock, Clock)
    events: list[Event] = []
    svc.bus.subscribe("rec", [EventType.OPERATION], events.append)
    svc.groups.put(Group("rack", [nid(0), nid(1), nid(2)]))
    sim.hang(nid(2))
    op = svc.groups.set("rack", typed_values({"physState": "POWER_ON"}))
    assert svc.store.cfg[nid(0)].phys_state is PhysState.POWER_ON
    assert svc.store.cfg[nid(3)].phys_state is PhysState.PHYS_UNKNOWN  # not in the group
    assert events[-1].data.progress["done"] == 0 and events[-1].data.progress["total"] == 3
    for _ in range(60):
        clock.advance(0.5)
    # The hung machine timed out to PHYS_HANG (counted as failed), then HANGtoOFF and OFFtoON
    # recovered it and the operation completed.
    printed = [e.describe() for e in events]
    assert "(PROGRESS) operation 1 on group rack: 2/3 done, 1 failed, running" in printed
    assert op.to_json()["complete"] and op.to_json()["done"] == 3 and op.to_json()["failed"] == 0
    assert len(events) < 12  # throttled: at most one per 0.2 s between start and end
    assert events[-1].data.progress["complete"]


def test_groups_survive_a_restart_and_deleted_nodes_leave_them(tmp_path: Path) -> None:
    svc = service(tmp_path)
    svc.groups.put(group_from_json("rack", {"nodes": [nid(0), nid(1)], "values": {"/Arch": "amd64"}}))
    svc.store.delete(nid(1))
    svc.persist.flush()
    svc.stopService()
    again = service(tmp_path)
    assert again.groups.get("rack").nodes == [nid(0)]
    assert again.groups.get("rack").values == {"/Arch": "amd64"}
    assert model.get_value(again.store.cfg[nid(0)], "/Arch") == "amd64"


def test_a_bulk_set_on_a_large_group_writes_its_members_a_slice_per_turn() -> None:
    n = APPLY_PER_TURN * 2 + 10
    svc = service(nodes=n)
    clock = svc.clock
    assert isinstance(clock, Clock)
    svc.groups.put(Group("hall", [nid(i) for i in range(n)]))
    clock.advance(0)
    cfg = svc.store.cfg
    written = svc.groups.written()
    assert written.called  # nothing in progress
    svc.groups.set("hall", typed_values({"busy": "BUSY"}))
    done = svc.groups.written()
    busy = sum(1 for i in range(n) if cfg[nid(i)].busy.name == "BUSY")
    assert busy == APPLY_PER_TURN and not done.called  # the first slice at once, in member order
    clock.advance(0)  # the rest in later turns (all at once on a Clock)
    assert done.called and all(cfg[nid(i)].busy.name == "BUSY" for i in range(n))
