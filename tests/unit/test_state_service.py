"""Cfg persistence in SQLite, the state file, our own node, and twistd option handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from kraken.state import model
from kraken.state.model import PhysState, RunState
from kraken.state.modules.loader import ModuleLoadError, load_modules
from kraken.state.modules.sim import SimPower
from kraken.state.service import StateError, StateService
from kraken.state.tap import Options

ME = "aaaaaaaa-0000-0000-0000-000000000001"
N1 = "bbbbbbbb-0000-0000-0000-000000000001"


def test_cfg_is_written_in_batches_and_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "cfg.sqlite"
    clock = Clock()
    first = StateService([SimPower()], clock, self_id=ME, db=str(db))
    node = model.Node(N1)
    node.platform = "sim"
    first.store.create(node)
    first.store.set_value(N1, "/Arch", "amd64")
    first.store.set_value(N1, "/PhysState", "POWER_ON", dsc=True)  # Dsc is not persisted
    clock.advance(1)
    first.store.delete(ME)
    first.stopService()

    second = StateService([SimPower()], Clock(), self_id=ME, db=str(db))
    assert second.store.cfg[N1].arch == "amd64"
    assert second.store.dsc[N1].phys_state is PhysState.PHYS_UNKNOWN
    assert second.store.cfg[ME].phys_state is PhysState.POWER_ON  # we are always there, and on
    assert second.store.dsc[ME].run_state is RunState.SYNC


def test_state_file_adds_missing_nodes_and_merges_our_own(tmp_path: Path) -> None:
    state = tmp_path / "nodes.json"
    state.write_text(json.dumps({"nodes": [{"id": N1, "nodename": "n1"}, {"id": ME, "nodename": "boss"}]}))
    svc = StateService([], Clock(), self_id=ME, state_file=str(state))
    assert svc.store.cfg[N1].nodename == "n1" and svc.store.cfg[ME].nodename == "boss"
    assert svc.engine.frozen
    svc.startService()
    assert not svc.engine.frozen
    frozen = StateService([], Clock(), self_id=ME, freeze=True)
    frozen.startService()
    assert frozen.engine.frozen


@pytest.mark.parametrize(
    ("content", "message"),
    [("{", "not JSON"), ('{"nodes": 3}', "expected"), ('{"nodes": [{"id": 1}]}', "nodes[0]")],
)
def test_bad_state_files_are_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    state = tmp_path / "nodes.json"
    state.write_text(content)
    with pytest.raises(StateError, match=message.replace("[", r"\[")):
        StateService([], Clock(), self_id=ME, state_file=str(state))
    with pytest.raises(StateError, match="cannot read"):
        StateService([], Clock(), self_id=ME, state_file=str(tmp_path / "missing.json"))


def test_module_loading() -> None:
    mods = load_modules(["sim", "freebusy", "kraken.state.modules.ipmi:IpmiPower"], {"sim": {"latency": 2}})
    assert [m.si for m in mods] == ["sim", "freebusy", "ipmi"] and mods[0].latency == 2
    for bad, message in [
        ("nope", "unknown state module"),
        ("os:path", "is not a kraken"),
        ("no.such:Thing", "cannot load"),
        ("sim sim", "share the service id"),
    ]:
        with pytest.raises(ModuleLoadError, match=message):
            load_modules(bad.split(), {})


def test_extra_twistd_flags_map_to_config_keys(tmp_path: Path) -> None:
    opts = Options()
    opts.parseOptions(
        ["--parent", "10.0.0.1:31415", "--state", "nodes.json", "--freeze", "--state-hello", "2"]
    )
    st = opts.config.state
    assert st.parent == "10.0.0.1:31415" and str(st.state_file).endswith("nodes.json")
    assert st.freeze is True and st.hello == 2.0


def test_runtime_overrides_disable_mutations_and_change_timeouts() -> None:
    (sim,) = load_modules(["sim"], {"sim": {"disable": ["HANGtoOFF"], "timeouts": {"OFFtoON": 3}}})
    by_id = {m.id: m for m in sim.mutations}
    assert "HANGtoOFF" not in by_id and by_id["OFFtoON"].timeout == 3.0
    with pytest.raises(ModuleLoadError, match="has no mutation 'WARP'"):
        load_modules(["sim"], {"sim": {"disable": ["WARP"]}})
    with pytest.raises(ModuleLoadError, match="number of seconds"):
        load_modules(["sim"], {"sim": {"timeouts": {"BOOT": "soon"}}})
