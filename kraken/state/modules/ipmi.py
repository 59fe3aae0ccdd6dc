"""IPMI power through pyghmi (IPMI 2.0 / RMCP+), run in a thread pool because pyghmi blocks.

Nodes with ``platform: ipmi`` carry the extension ``type.googleapis.com/IPMI.BMC``
``{host, port, user, password | passwordFile}``. Mutations: UKtoOFF (read the power state),
OFFtoON, ONtoOFF, HANGtoOFF. Any BMC error fails the mutation at once (→ PHYS_HANG), it never
blocks the engine. Every ``poll`` seconds the power of every IPMI node is read again. The node's
serial console is the BMC's SOL (:mod:`kraken.state.modules.sol`), in a pool of its own
(``console_threads``) so a slow console never delays power control.
"""

from __future__ import annotations

import threading
from typing import Any, NoReturn

from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from kraken.state.model import ExtensionType, Node, register_extension
from kraken.state.modules.base import ActionError, ConsoleSink, ModuleAPI, Mutation, Starter
from kraken.state.modules.blocking import BlockingCalls
from kraken.state.modules.polled import BMCConfigError, PolledPower, bmc_password
from kraken.state.modules.power import power_mutations
from kraken.state.modules.sol import SolLink, SolPump

log = Logger(namespace="kraken.state.ipmi")

BMC = register_extension(ExtensionType("IPMI.BMC"))
PLATFORM = "ipmi"


def bmc_of(node: Node) -> dict[str, Any]:
    """Connection settings of a node's BMC, or a :class:`BMCConfigError` naming what is missing."""
    ext = node.extensions.get(BMC.url)
    if not ext:
        raise BMCConfigError(f"node {node.id} has no {BMC.url} extension")
    host = ext.get("host")
    if not isinstance(host, str) or not host:
        raise BMCConfigError(f"node {node.id}: {BMC.url}/Host is missing")
    port = ext.get("port", 623)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise BMCConfigError(f"node {node.id}: {BMC.url}/Port must be a port number")
    password = bmc_password(node, ext)
    return {"bmc": host, "port": port, "userid": str(ext.get("user", "")), "password": password}


class CommandCache:
    """One pyghmi ``Command`` per BMC, reused: pyghmi keeps the session it logged in, and a
    second ``Command`` for the same BMC waits on that session instead of opening its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._commands: dict[tuple[Any, ...], Any] = {}
        self._locks: dict[tuple[Any, ...], threading.Lock] = {}

    def power(self, settings: dict[str, Any], action: str | None) -> str:
        """Blocking: set (``on``/``off``) or read the power; returns ``on`` or ``off``."""

        def switch(cmd: Any) -> str:
            if action is None:
                return str(cmd.get_power()["powerstate"])
            result = cmd.set_power(action, wait=True)
            return str(result.get("powerstate", action))

        return str(self.run(settings, switch))

    def run(self, settings: dict[str, Any], fn: Any) -> Any:
        """Blocking: ``fn(command)`` with the BMC's session, one call at a time per BMC."""
        from pyghmi.ipmi.command import Command

        key = (settings["bmc"], settings["port"], settings["userid"], settings["password"])
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            cmd = self._commands.get(key)
            try:
                if cmd is None:
                    cmd = self._commands[key] = Command(**settings)
                return fn(cmd)
            except Exception:
                self._commands.pop(key, None)
                raise


class IpmiPower(PolledPower):
    si = "ipmi"
    module_url = "kraken.state.modules.ipmi"
    platform = PLATFORM
    pool_name = "kraken-ipmi"
    actions = ("restart", "identify")

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.commands = CommandCache()
        self.sol_calls = BlockingCalls("kraken-sol", int(self.config.get("console_threads", 8)))
        self.sol_pump = SolPump()

    def start(self, api: ModuleAPI) -> None:
        super().start(api)
        self.sol_calls.start(api.reactor, self.sol_calls.stop)

    def stop(self) -> None:
        super().stop()
        self.sol_calls.stop()

    def console(self, cfg: Node) -> Starter:
        """The BMC's serial-over-LAN console."""
        try:
            settings = bmc_of(cfg)
        except BMCConfigError as e:
            raise ActionError(409, "NO_BMC", str(e)) from None
        assert self.api is not None
        reactor = self.api.reactor
        assert IReactorFromThreads.providedBy(reactor)

        def start(sink: ConsoleSink) -> SolLink:
            return SolLink(settings, sink, reactor, self.sol_calls, self.sol_pump)

        return start

    def declare_mutations(self) -> list[Mutation]:
        timeout = float(self.config.get("timeout", 20.0))
        return power_mutations(
            self.si, PLATFORM, timeout, float(self.config.get("hang_timeout", timeout * 2))
        )

    def _call(self, settings: dict[str, Any], action: str | None) -> Any:
        return self.calls.call(self.commands.power, settings, action)

    def mutate(self, mutation: Mutation, cfg: Node, dsc: Node) -> None:
        assert self.api is not None
        api = self.api
        try:
            settings = bmc_of(cfg)
        except BMCConfigError as e:
            api.fail(self.si, cfg.id, mutation.id, str(e))
            return
        action = {"OFFtoON": "on", "ONtoOFF": "off", "HANGtoOFF": "off"}.get(mutation.id)
        generation = self.generation(cfg.id)
        d = self._call(settings, action)

        def done(state: str) -> None:
            if self.generation(cfg.id) != generation:
                return  # interrupted meanwhile
            api.discover(self.si, cfg.id, "/PhysState", "POWER_ON" if state == "on" else "POWER_OFF")

        def failed(failure: Any) -> None:
            if self.generation(cfg.id) == generation:
                api.fail(
                    self.si,
                    cfg.id,
                    mutation.id,
                    f"BMC {settings['bmc']}:{settings['port']}: {failure.getErrorMessage()}",
                )

        d.addCallbacks(done, failed)

    def act(self, action: str, cfg: Node, args: dict[str, Any]) -> Any:
        """``restart`` (chassis power reset) or ``identify`` (``{"on": true|false}``: the
        chassis identify light)."""
        try:
            settings = bmc_of(cfg)
        except BMCConfigError as e:
            raise ActionError(409, "NO_BMC", str(e)) from None
        if action == "identify":
            on = args.get("on", True)
            if not isinstance(on, bool):
                raise ActionError(400, "BAD_ARGUMENT", "on must be true or false")

            def identify(cmd: Any) -> dict[str, Any]:
                cmd.set_identify(on=on)
                return {"identify": on}

            work = identify
        else:

            def work(cmd: Any) -> dict[str, Any]:
                cmd.set_power("reset")
                return {"reset": "reset"}

        def failed(failure: Any) -> NoReturn:
            raise ActionError(
                502, "BMC_ERROR", f"BMC {settings['bmc']}:{settings['port']}: {failure.getErrorMessage()}"
            )

        return self.calls.call(self.commands.run, settings, work).addErrback(failed)

    def poll(self) -> None:
        assert self.api is not None
        api = self.api
        for cfg, settings in self.pollable(bmc_of):
            node_id = cfg.id

            def seen(state: str, node_id: str = node_id) -> None:
                api.discover(self.si, node_id, "/PhysState", "POWER_ON" if state == "on" else "POWER_OFF")

            def unreachable(failure: Any, node_id: str = node_id) -> None:
                log.info("poll of {node}'s BMC failed: {why}", node=node_id, why=failure.getErrorMessage())

            self._call(settings, None).addCallbacks(seen, unreachable)
