"""Path execution driven by a Clock: success, timeout → fail-to → recovery, unexpected
discoveries, freeze/thaw, contexts, module auto-start and the discovery whitelist."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from kraken.state import model
from kraken.state.engine import Engine
from kraken.state.events import Event, EventBus, EventType
from kraken.state.model import Node, PhysState, RunState
from kraken.state.modules.base import Mutation
from kraken.state.modules.sim import SimPower
from kraken.state.store import StateStore

ME = "00000000-0000-0000-0000-00000000000a"
N1 = "00000000-0000-0000-0000-000000000001"
OTHER_PARENT = "00000000-0000-0000-0000-0000000000ff"


class Rig:
    def __init__(self, latency: float = 1.0, module: Any = None) -> None:
        self.clock = Clock()
        self.bus = EventBus()
        self.store = StateStore(self.bus)
        self.sim = module or SimPower({"latency": latency, "timeout": 10})
        self.engine = Engine(self.store, self.bus, self.clock, [self.sim], ME, retry_delay=5)
        self.events: list[Event] = []
        self.bus.subscribe("rec", [EventType.ALL], self.events.append)

    def add(self, node_id: str = N1, parent: str = ME, **cfg: str) -> None:
        n = Node(node_id)
        n.platform, n.parent_id = "sim", parent
        for key, value in cfg.items():
            model.set_value(n, key, value)
        self.store.create(n)

    def cfg(self, node_id: str = N1, **values: str) -> None:
        self.store.set_values(node_id, list(values.items()))

    def dsc(self, node_id: str = N1) -> Node:
        return self.store.dsc[node_id]

    def run(self, seconds: float, step: float = 0.5) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)

    def printed(self, kind: EventType) -> list[str]:
        return [e.describe() for e in self.events if e.type is kind]


def test_success_path_off_to_on_and_sync() -> None:
    rig = Rig()
    rig.add(**{"/RunState": "SYNC"})
    rig.engine.thaw()
    rig.run(5)
    assert rig.dsc().phys_state is PhysState.POWER_ON and rig.dsc().run_state is RunState.SYNC
    assert [m for _, m in rig.sim.performed] == ["UKtoOFF", "OFFtoON", "BOOT"]
    assert rig.printed(EventType.STATE_MUTATION)[0] == f"(MUTATE) {N1} : sim -> UKtoOFF"
    assert f"(sim) {N1}:/PhysState == POWER_ON" in rig.printed(EventType.DISCOVERY)
    assert rig.engine.path_json(N1)["cmplt"] is True
    assert rig.engine.converged(N1)


def test_timeout_fails_to_hang_then_recovers() -> None:
    rig = Rig()
    rig.sim.hang(N1)
    rig.add(**{"/PhysState": "POWER_ON"})
    rig.engine.thaw()
    rig.run(9.5)
    assert rig.dsc().phys_state is PhysState.PHYS_UNKNOWN
    rig.run(1)
    assert f"(INTERRUPT) {N1} : sim -> UKtoOFF" in rig.printed(EventType.STATE_MUTATION)
    assert f"(sim) {N1}:/PhysState == PHYS_HANG" in rig.printed(EventType.DISCOVERY)
    rig.run(4)
    assert rig.dsc().phys_state is PhysState.POWER_ON
    assert [m for _, m in rig.sim.performed] == ["UKtoOFF", "HANGtoOFF", "OFFtoON"]


def test_unexpected_discovery_recomputes_and_forgets() -> None:
    rig = Rig(latency=0)
    rig.add(**{"/RunState": "SYNC"})
    rig.engine.thaw()
    assert rig.dsc().run_state is RunState.SYNC
    rig.sim.performed.clear()
    rig.sim.set_power(N1, False)  # someone pulled the plug
    rig.sim.poll()
    assert f"(UPDATE) {N1}:/RunState = UNKNOWN" in rig.printed(EventType.STATE_CHANGE)
    assert [m for _, m in rig.sim.performed] == ["OFFtoON", "BOOT"]
    assert rig.dsc().phys_state is PhysState.POWER_ON and rig.dsc().run_state is RunState.SYNC


def test_unexpected_value_during_a_step_replans() -> None:
    rig = Rig(latency=3)
    rig.add(**{"/PhysState": "POWER_ON"})
    rig.engine.thaw()
    rig.run(3)  # UKtoOFF done, OFFtoON in flight
    assert rig.sim.performed[-1][1] == "OFFtoON"
    rig.engine.discover("sim", N1, "/PhysState", "PHYS_HANG")
    assert rig.sim.performed[-1][1] == "HANGtoOFF"
    rig.run(10)
    assert rig.dsc().phys_state is PhysState.POWER_ON


def test_frozen_engine_ignores_changes_until_thawed() -> None:
    rig = Rig(latency=0)
    rig.add(**{"/PhysState": "POWER_ON"})
    assert rig.sim.performed == []
    rig.engine.thaw()
    assert rig.dsc().phys_state is PhysState.POWER_ON
    rig.engine.freeze()
    rig.cfg(**{"/PhysState": "POWER_OFF"})
    rig.run(2)
    assert rig.dsc().phys_state is PhysState.POWER_ON
    rig.engine.thaw()
    assert rig.dsc().phys_state is PhysState.POWER_OFF


def test_out_of_context_steps_are_awaited_not_performed() -> None:
    rig = Rig(latency=0)
    rig.add(parent=OTHER_PARENT, **{"/PhysState": "POWER_ON"})
    rig.engine.thaw()
    assert rig.sim.performed == []
    assert rig.engine.path_json(N1)["chain"][0]["id"] == "sim/UKtoOFF"
    rig.engine.discover("sim", N1, "/PhysState", "POWER_OFF")  # arrives by sync from the real parent
    assert rig.engine.path_json(N1)["chain"][0]["id"] == "sim/OFFtoON"  # worked out from what we heard
    assert rig.sim.performed == []
    assert N1 not in rig.engine.paths  # its parent drives it: no path, no timer kept here
    assert rig.engine.active_paths() == 0
    rig.engine.discover("sim", N1, "/PhysState", "POWER_ON")
    assert rig.engine.path_json(N1) == {"cur": 0, "cmplt": True, "chain": []}


def test_discoveries_outside_the_whitelist_are_rejected() -> None:
    rig = Rig(latency=0)
    rig.add()
    assert not rig.engine.discover("sim", N1, "/Arch", "x")
    assert not rig.engine.discover("nobody", N1, "/PhysState", "POWER_ON")
    assert not rig.engine.discover("sim", N1, "/PhysState", "WARM")
    assert rig.dsc().phys_state is PhysState.PHYS_UNKNOWN


class SlowStart(SimPower):
    def __init__(self) -> None:
        super().__init__({"latency": 0})
        self.ready: Deferred[None] = Deferred()

    def start(self, api: Any) -> Deferred[None]:
        super().start(api)
        return self.ready


def test_module_is_started_when_a_step_needs_it() -> None:
    rig = Rig(module=SlowStart())
    me = Node(ME)
    rig.store.create(me)
    rig.add(**{"/PhysState": "POWER_ON"})
    rig.engine.thaw()
    assert rig.sim.performed == []
    assert model.get_value(rig.dsc(ME), "/Services/sim/State").name == "INIT"
    rig.sim.ready.callback(None)
    assert rig.dsc().phys_state is PhysState.POWER_ON
    assert model.get_value(rig.dsc(ME), "/Services/sim/State").name == "RUN"


class Broken(SimPower):
    def mutate(self, mutation: Mutation, cfg: Node, dsc: Node) -> None:
        if mutation.id == "OFFtoON":
            raise RuntimeError("BMC on fire")
        super().mutate(mutation, cfg, dsc)


def test_a_raising_module_fails_the_step_and_the_engine_keeps_going() -> None:
    rig = Rig(module=Broken({"latency": 0}))
    rig.add(**{"/PhysState": "POWER_ON"})
    rig.add(node_id=OTHER_PARENT, **{"/PhysState": "POWER_OFF"})
    rig.engine.thaw()
    assert rig.dsc().phys_state is PhysState.PHYS_HANG or rig.dsc().phys_state is PhysState.POWER_OFF
    assert rig.dsc(OTHER_PARENT).phys_state is PhysState.POWER_OFF
    rig.run(20)
    assert rig.engine.paths  # still retrying, nothing crashed
    assert rig.printed(EventType.STATE_MUTATION).count(f"(MUTATE) {N1} : sim -> OFFtoON") >= 2


def test_delete_drops_the_path() -> None:
    rig = Rig(latency=5)
    rig.add(**{"/PhysState": "POWER_ON"})
    rig.engine.thaw()
    rig.store.delete(N1)
    assert N1 not in rig.engine.paths
    rig.run(20)


@pytest.mark.parametrize("count", [50])
def test_many_nodes_converge(count: int) -> None:
    rig = Rig(latency=1)
    ids = [f"00000000-0000-0000-0001-{i:012d}" for i in range(count)]
    for i in ids:
        rig.add(node_id=i, **{"/RunState": "SYNC"})
    rig.engine.thaw()
    rig.run(4, step=1)
    assert all(rig.engine.converged(i) for i in ids)


def test_a_dead_child_is_recovered_along_the_graph() -> None:
    rig = Rig(latency=0)
    rig.add(**{"/RunState": "SYNC"})
    rig.engine.allow_discoveries("sse", {"/RunState": {"ERROR"}})
    rig.engine.thaw()
    rig.sim.performed.clear()
    rig.engine.discover("sse", N1, "/RunState", "ERROR")
    assert [m for _, m in rig.sim.performed] == ["ONtoOFF", "OFFtoON", "BOOT"]
    assert rig.dsc().run_state is RunState.SYNC


class FlakyBoot(SimPower):
    """BOOT fails to POWER_OFF the first time: the engine devolves to OFFtoON and replays."""

    def declare_mutations(self) -> list[Mutation]:
        muts = [m for m in super().declare_mutations() if m.id != "BOOT"]
        boot = next(m for m in super().declare_mutations() if m.id == "BOOT")
        return [*muts, replace(boot, fail_to=("/PhysState", PhysState.POWER_OFF))]

    def mutate(self, mutation: Mutation, cfg: Node, dsc: Node) -> None:
        if mutation.id == "BOOT" and not self.hung:
            self.hung.add("booted-once")
            self.performed.append((cfg.id, "BOOT(lost)"))
            return
        super().mutate(mutation, cfg, dsc)


def test_timeout_devolves_to_the_step_starting_at_the_fail_to_value() -> None:
    rig = Rig(module=FlakyBoot({"latency": 0, "timeout": 10}))
    rig.add(**{"/RunState": "SYNC"})
    rig.engine.thaw()
    assert [m for _, m in rig.sim.performed] == ["UKtoOFF", "OFFtoON", "BOOT(lost)"]
    rig.run(10.5)
    assert [m for _, m in rig.sim.performed][3:] == ["OFFtoON", "BOOT"]
    assert rig.dsc().run_state is RunState.SYNC and rig.engine.converged(N1)


def test_services_of_a_node_whose_agent_is_not_in_sync_are_forgotten() -> None:
    rig = Rig(latency=0)
    rig.add(**{"/RunState": "SYNC"})
    rig.engine.thaw()
    rig.store.set_value(N1, "/Services/pxe/State", "RUN", dsc=True)
    rig.sim.set_power(N1, False)
    rig.engine.freeze()
    rig.sim.poll()
    assert model.get_value(rig.dsc(), "/Services/pxe/State").name == "UNKNOWN"
    assert rig.dsc().run_state is RunState.UNKNOWN


def test_ipmi_node_without_a_bmc_fails_at_once_not_after_the_timeout() -> None:
    from kraken.state.modules.ipmi import IpmiPower

    ipmi = IpmiPower({"poll": 0, "timeout": 30})
    rig = Rig(module=ipmi)
    try:
        n = Node(N1)
        n.platform, n.parent_id, n.phys_state = "ipmi", ME, PhysState.POWER_ON
        rig.store.create(n)
        rig.engine.thaw()
        assert rig.dsc().phys_state is PhysState.PHYS_HANG
        assert f"(INTERRUPT) {N1} : ipmi -> UKtoOFF" in rig.printed(EventType.STATE_MUTATION)
        assert rig.clock.seconds() == 0
    finally:
        ipmi.stop()
