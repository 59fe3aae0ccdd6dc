"""What the BMC power modules (``ipmi``, ``redfish``) share: blocking BMC calls in a thread pool,
a poll of every node of their platform, and a generation per node, so the late answer of a step
that was interrupted meanwhile is dropped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from twisted.internet.task import LoopingCall

from kraken.state.model import Node, PhysState
from kraken.state.modules.base import Module, ModuleAPI
from kraken.state.modules.blocking import BlockingCalls

BMCSettings = Callable[[Node], dict[str, Any]]


class BMCConfigError(Exception):
    """A node's BMC settings that cannot be used; the message names the node and the field."""


def bmc_password(node: Node, ext: dict[str, Any]) -> str:
    """The BMC password of *ext* (a node's BMC extension): ``password``, else ``passwordFile``."""
    password = ext.get("password")
    if password is None and ext.get("passwordFile"):
        try:
            password = Path(ext["passwordFile"]).read_text().strip()
        except OSError as e:
            raise BMCConfigError(f"node {node.id}: cannot read passwordFile: {e.strerror}") from None
    return str(password or "")


class PolledPower(Module):
    """Subclasses set ``platform``, ``pool_name`` and ``default_threads`` and implement ``poll``."""

    platform: ClassVar[str] = ""
    pool_name: ClassVar[str] = ""
    default_threads: ClassVar[int] = 4

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.poll_interval = float(self.config.get("poll", 30.0))
        self.calls = BlockingCalls(self.pool_name, int(self.config.get("threads", self.default_threads)))
        self._poller: LoopingCall | None = None
        self._generation: dict[str, int] = {}

    def start(self, api: ModuleAPI) -> None:
        super().start(api)
        self.calls.start(api.reactor, self.stop)
        if self.poll_interval > 0:
            self._poller = LoopingCall(self.poll)
            self._poller.clock = api.clock
            self._poller.start(self.poll_interval, now=False)

    def stop(self) -> None:
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        self._poller = None
        self.calls.stop()

    def poll(self) -> None:
        raise NotImplementedError

    def generation(self, node_id: str) -> int:
        return self._generation.get(node_id, 0)

    def interrupt(self, node_id: str) -> None:
        self._generation[node_id] = self.generation(node_id) + 1

    def pollable(self, settings_of: BMCSettings) -> Iterator[tuple[Node, dict[str, Any]]]:
        """Each node of this platform worth polling (not hung) with its BMC settings; nodes whose
        settings are unusable are left out."""
        assert self.api is not None
        for cfg in self.api.cfg_nodes():
            if cfg.platform != self.platform:
                continue
            dsc = self.api.dsc_node(cfg.id)
            if dsc is None or dsc.phys_state is PhysState.PHYS_HANG:
                continue
            try:
                yield cfg, settings_of(cfg)
            except BMCConfigError:
                continue
