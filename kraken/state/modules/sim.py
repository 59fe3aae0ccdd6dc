"""Simulated power: in-process fake machines for tests, demos and benchmarks.

Nodes with ``platform: sim`` get power mutations that flip a fake power switch after
``latency`` seconds (failing with probability ``failure_rate``), and a ``BOOT`` mutation
that brings a powered node's agent from UNKNOWN straight to SYNC.
"""

from __future__ import annotations

import random
from typing import Any

from kraken.state.deadlines import Deadline, Deadlines
from kraken.state.model import Node, PhysState
from kraken.state.modules.base import Context, Module, ModuleAPI, Mutation, declare
from kraken.state.modules.power import HANG, power_mutations


class SimPower(Module):
    si = "sim"
    module_url = "kraken.state.modules.sim"
    platform = "sim"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.latency = float(self.config.get("latency", 0.0))
        self.failure_rate = float(self.config.get("failure_rate", 0.0))
        self.random = random.Random(self.config.get("seed", 0))
        self.power: dict[str, bool] = {}
        self.hung: set[str] = set()
        self.pending: dict[str, Deadline] = {}
        self.performed: list[tuple[str, str]] = []
        self.timers: Deadlines | None = None

    def start(self, api: ModuleAPI) -> Any:
        super().start(api)
        self.timers = Deadlines(api.clock)  # thousands of machines switching: one reactor timer

    def declare_mutations(self) -> list[Mutation]:
        timeout = float(self.config.get("timeout", 10.0))
        boot = declare(
            self.si,
            "BOOT",
            {"/RunState": ("UNKNOWN", "SYNC")},
            requires={"/PhysState": "POWER_ON", "/Platform": "sim"},
            context=Context.CHILD,
            timeout=timeout,
            fail_to=HANG,
        )
        return [*power_mutations(self.si, "sim", timeout, timeout * 2), boot]

    def mutate(self, mutation: Mutation, cfg: Node, dsc: Node) -> None:
        self.performed.append((cfg.id, mutation.id))
        failed = self.failure_rate > 0 and self.random.random() < self.failure_rate
        if self.latency <= 0 and not failed:
            self._finish(cfg.id, mutation.id)
            return
        if failed:
            return  # the engine's timeout turns this into the fail-to value
        assert self.timers is not None
        self.pending[cfg.id] = self.timers.call_later(self.latency, self._finish, cfg.id, mutation.id)

    def _finish(self, node_id: str, mutation_id: str) -> None:
        self.pending.pop(node_id, None)
        assert self.api is not None
        if mutation_id == "BOOT":
            self.api.discover(self.si, node_id, "/RunState", "SYNC")
            return
        if node_id in self.hung and mutation_id != "HANGtoOFF":
            return
        if mutation_id in ("OFFtoON",):
            self.power[node_id] = True
        elif mutation_id in ("ONtoOFF", "HANGtoOFF"):
            self.power[node_id] = False
            self.hung.discard(node_id)
        self.api.discover(
            self.si, node_id, "/PhysState", "POWER_ON" if self.power.get(node_id) else "POWER_OFF"
        )

    def interrupt(self, node_id: str) -> None:
        call = self.pending.pop(node_id, None)
        if call is not None and call.active():
            call.cancel()

    # -- out-of-band changes, as a real machine would have them ---------------------------------
    def set_power(self, node_id: str, on: bool) -> None:
        self.power[node_id] = on

    def hang(self, node_id: str) -> None:
        """The machine stops answering power requests until HANGtoOFF."""
        self.hung.add(node_id)

    def poll(self) -> None:
        """Rediscover every known machine's power (a power module's periodic poll)."""
        assert self.api is not None
        for node_id, on in sorted(self.power.items()):
            self.api.discover(
                self.si, node_id, "/PhysState", (PhysState.POWER_ON if on else PhysState.POWER_OFF).name
            )
