"""Mutation graph building and path choice: tables of mutation sets and the paths expected."""

from __future__ import annotations

from typing import Any

import pytest

from kraken.state.graph import MutationGraph
from kraken.state.model import Node, PhysState, RunState
from kraken.state.modules.base import Context, Mutation, declare
from kraken.state.modules.power import power_mutations

P, R = "/PhysState", "/RunState"


def boot(si: str = "pxe", cost: float = 1.0) -> Mutation:
    return declare(si, "BOOT", {R: ("UNKNOWN", "SYNC")}, requires={P: "POWER_ON"}, cost=cost)


def halt(excluded: bool) -> list[Mutation]:
    """Power plus an agent barrier SYNC→INIT; ONtoOFF may exclude RunState SYNC."""
    muts = [m for m in power_mutations("pw", "x") if m.id != "ONtoOFF"]
    excludes = {R: "SYNC"} if excluded else {}
    muts.append(
        declare(
            "pw", "ONtoOFF", {P: ("POWER_ON", "POWER_OFF")}, requires={"/Platform": "x"}, excludes=excludes
        )
    )
    muts.append(
        declare("agent", "SYNCtoINIT", {R: ("SYNC", "INIT")}, requires={P: "POWER_ON"}, context=Context.SELF)
    )
    return [*muts, boot()]


def node(platform: str = "x", phys: str = "PHYS_UNKNOWN", run: str = "UNKNOWN") -> Node:
    n = Node("123e4567-e89b-12d3-a456-426655440000")
    n.platform, n.phys_state, n.run_state = platform, PhysState[phys], RunState[run]
    return n


def plan(muts: list[Mutation], start: Node, cfg: Node) -> list[str] | None:
    g = MutationGraph(muts)
    chain = g.path(g.state_of(start), g.target_of(cfg), g.fixed_of(cfg))
    return None if chain is None else [e.mutation.name for e in chain]


CASES: list[tuple[str, list[Mutation], dict[str, str], dict[str, str], list[str] | None]] = [
    (
        "power on from unknown",
        power_mutations("pw", "x"),
        {},
        {"phys": "POWER_ON"},
        ["pw/UKtoOFF", "pw/OFFtoON"],
    ),
    (
        "power off from on",
        power_mutations("pw", "x"),
        {"phys": "POWER_ON"},
        {"phys": "POWER_OFF"},
        ["pw/ONtoOFF"],
    ),
    (
        "recover from hang",
        power_mutations("pw", "x"),
        {"phys": "PHYS_HANG"},
        {"phys": "POWER_ON"},
        ["pw/HANGtoOFF", "pw/OFFtoON"],
    ),
    ("already there", power_mutations("pw", "x"), {"phys": "POWER_ON"}, {"phys": "POWER_ON"}, []),
    (
        "runState SYNC implies power on",
        [*power_mutations("pw", "x"), boot()],
        {"phys": "POWER_OFF"},
        {"run": "SYNC"},
        ["pw/OFFtoON", "pxe/BOOT"],
    ),
    ("zero cfg values are don't care", [*power_mutations("pw", "x"), boot()], {"phys": "POWER_ON"}, {}, []),
    ("wrong platform is unreachable", power_mutations("pw", "y"), {}, {"phys": "POWER_ON"}, None),
    (
        "values no mutation changes are ignored",
        power_mutations("pw", "x"),
        {"phys": "POWER_OFF"},
        {"run": "SYNC"},
        [],
    ),
    ("unreachable without power", [boot()], {"phys": "POWER_OFF"}, {"run": "SYNC"}, None),
    (
        "excludes force the barrier first",
        halt(True),
        {"phys": "POWER_ON", "run": "SYNC"},
        {"phys": "POWER_OFF"},
        ["agent/SYNCtoINIT", "pw/ONtoOFF"],
    ),
    (
        "without excludes power off directly",
        halt(False),
        {"phys": "POWER_ON", "run": "SYNC"},
        {"phys": "POWER_OFF"},
        ["pw/ONtoOFF"],
    ),
    (
        "tie broken by name",
        [boot("zz"), boot("aa"), *power_mutations("pw", "x")],
        {"phys": "POWER_ON"},
        {"run": "SYNC"},
        ["aa/BOOT"],
    ),
    (
        "cost beats name",
        [boot("zz"), boot("aa", cost=3), *power_mutations("pw", "x")],
        {"phys": "POWER_ON"},
        {"run": "SYNC"},
        ["zz/BOOT"],
    ),
    (
        "fewer mutations beat names",
        [*power_mutations("aa", "x"), declare("zz", "UKtoON", {P: ("PHYS_UNKNOWN", "POWER_ON")})],
        {},
        {"phys": "POWER_ON"},
        ["zz/UKtoON"],
    ),
]


@pytest.mark.parametrize(("name", "muts", "start", "cfg", "expected"), CASES, ids=[c[0] for c in CASES])
def test_paths(
    name: str, muts: list[Mutation], start: dict[str, Any], cfg: dict[str, Any], expected: list[str] | None
) -> None:
    assert plan(muts, node(**start), node(**cfg)) == expected
    assert plan(list(reversed(muts)), node(**start), node(**cfg)) == expected, "depends on declaration order"


def test_discovery_dependencies_and_forgetting() -> None:
    g = MutationGraph(halt(True))
    assert g.mutators == (P, R)
    assert g.deps[g.index[R]] == ((g.index[P], PhysState.POWER_ON),)
    assert g.deps[g.index[P]] == ()
    assert g.forget((PhysState.POWER_OFF, RunState.SYNC)) == (PhysState.POWER_OFF, RunState.UNKNOWN)
    assert g.forgotten(node(phys="POWER_OFF", run="SYNC")) == [R]


def test_whole_graph_has_root_hang_and_constraints() -> None:
    g = MutationGraph([*power_mutations("pw", "x"), boot()])
    whole = g.graph()
    labels = {g.label(s) for s in whole.nodes}
    assert "(unknown)" in labels
    assert "PhysState: PHYS_HANG\nPlatform: x" in labels
    assert "PhysState: POWER_ON\nRunState: SYNC\nPlatform: x" in labels
    data = g.to_json(whole)
    assert {e["label"] for e in data["edges"]} >= {"pw/UKtoOFF", "pw/OFFtoON", "pw/HANGtoOFF", "pxe/BOOT"}
    assert g.to_dot(whole).startswith("digraph mutations {")
    excl = MutationGraph(halt(True))
    assert (
        any("RunState: !SYNC" in excl.label(s) for s in excl.graph().nodes) is False
    )  # mutator excludes are values
    assert g.to_json(whole) == MutationGraph(list(reversed([*power_mutations("pw", "x"), boot()]))).to_json(
        MutationGraph(list(reversed([*power_mutations("pw", "x"), boot()]))).graph()
    )


def test_non_mutator_excludes_show_in_the_graph() -> None:
    m = declare("pw", "ONtoOFF", {P: ("POWER_ON", "POWER_OFF")}, excludes={"/Busy": "BUSY"})
    g = MutationGraph([*power_mutations("pw", "x")[:2], m])
    assert any("Busy: !BUSY" in g.label(s) for s in g.graph().nodes)
    busy = node(phys="POWER_ON")
    busy.busy = busy.busy.__class__.BUSY
    assert plan([m], node(phys="POWER_ON"), node(phys="POWER_OFF")) == ["pw/ONtoOFF"]
    start = node(phys="POWER_ON")
    target = node(phys="POWER_OFF")
    target.busy = busy.busy
    assert plan([m], start, target) is None
