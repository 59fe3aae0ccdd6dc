"""Redfish power, power polling, inventory and identify LED through sushy (OpenStack's Redfish
client), run in the module's thread pool because sushy blocks.

Nodes with ``platform: redfish`` carry the extension ``type.googleapis.com/Redfish.BMC``
``{url, system?, user, password | passwordFile, verify?}``: ``url`` is the BMC's base URL
(``https://10.0.0.5``; ``/redfish/v1`` is added), ``system`` the ComputerSystem's id or path
when the BMC manages more than one, ``verify`` false or a CA file for self-signed BMCs.

Mutations are those of every power module: UKtoOFF reads the power, OFFtoON sends ``On``,
ONtoOFF ``ForceOff`` (or ``GracefulShutdown`` with ``off: GracefulShutdown``), HANGtoOFF
``ForceOff``. A BMC answers a reset at once and switches later (seconds, as on real hardware),
so after the action the power is read every ``settle`` seconds until it matches. Any BMC error
fails the step at once (→ PHYS_HANG) and is written, with the inventory, into the node's Dsc
extension ``type.googleapis.com/Redfish.Inventory`` (``error``). Actions: ``restart``
(ForceRestart), ``shutdown`` (GracefulShutdown), ``identify`` (``{"led": "Lit"|"Blinking"|"Off"}``)
and ``inventory`` (read it again now).

Serial console: the BMC's System and Managers are read for a ``SerialConsole`` (Redfish's
``IPMI``/``SSH``/``Telnet`` services). kraken bridges no SSH or Telnet consoles, so the answer is
a clear error naming what the BMC advertises, or that it offers none (sushy-tools' emulator
offers none); a BMC that serves IPMI SOL is reached as an ``ipmi`` node.
"""

from __future__ import annotations

import threading
from typing import Any, NoReturn

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.state.model import ExtensionType, Node, register_extension
from kraken.state.modules.base import ActionError, ConsoleSink, Mutation, Starter
from kraken.state.modules.polled import BMCConfigError, PolledPower, bmc_password
from kraken.state.modules.power import power_mutations

log = Logger(namespace="kraken.state.redfish")

BMC = register_extension(ExtensionType("Redfish.BMC"))
INVENTORY = register_extension(ExtensionType("Redfish.Inventory"))
PLATFORM = "redfish"
OFF_ACTIONS = ("ForceOff", "GracefulShutdown")
LED_STATES = ("Lit", "Blinking", "Off")


def bmc_of(node: Node) -> dict[str, Any]:
    """Connection settings of a node's Redfish BMC, or a :class:`BMCConfigError`."""
    ext = node.extensions.get(BMC.url)
    if not ext:
        raise BMCConfigError(f"node {node.id} has no {BMC.url} extension")
    url = ext.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise BMCConfigError(f"node {node.id}: {BMC.url}/Url must be an http(s) URL")
    password = bmc_password(node, ext)
    verify = ext.get("verify", True)
    if not isinstance(verify, (bool, str)):
        raise BMCConfigError(f"node {node.id}: {BMC.url}/Verify must be true, false or a CA file")
    system = ext.get("system", "")
    return {
        "url": base_url(url),
        "system": str(system or ""),
        "user": str(ext.get("user", "")),
        "password": password,
        "verify": verify,
    }


def base_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/redfish/v1") else url + "/redfish/v1"


def power_name(state: Any) -> str:
    """sushy's PowerState as ``on``/``off`` (``PoweringOn`` counts as not yet on)."""
    value = str(getattr(state, "value", state))
    return {"On": "on", "Off": "off"}.get(value, value.lower())


class Bmcs:
    """One sushy root per BMC, reused, with one call at a time per BMC (blocking; pool threads)."""

    def __init__(self, read_timeout: float, connect_timeout: float) -> None:
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._roots: dict[tuple[Any, ...], Any] = {}
        self._locks: dict[tuple[Any, ...], threading.Lock] = {}

    def _key(self, s: dict[str, Any]) -> tuple[Any, ...]:
        return (s["url"], s["user"], s["password"], s["verify"])

    def run(self, settings: dict[str, Any], fn: Any, *args: Any) -> Any:
        import sushy
        from sushy import auth

        key = self._key(settings)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            try:
                root = self._roots.get(key)
                if root is None:
                    root = self._roots[key] = sushy.Sushy(
                        settings["url"],
                        auth=auth.BasicAuth(settings["user"], settings["password"]),
                        verify=settings["verify"],
                        server_side_retries=1,
                        server_side_retries_delay=0.5,
                        read_timeout=self.read_timeout,
                        connect_timeout=self.connect_timeout,
                    )
                return fn(self._system(root, settings["system"]), *args)
            except Exception:
                self._roots.pop(key, None)
                raise

    @staticmethod
    def _system(root: Any, name: str) -> Any:
        members = root.get_system_collection().members_identities
        if name:
            wanted = [m for m in members if m == name or m.rstrip("/").rsplit("/", 1)[-1] == name]
            if not wanted:
                raise BMCConfigError(f"the BMC has no system {name!r} (it has {len(members)})")
            return root.get_system(wanted[0])
        if len(members) != 1:
            raise BMCConfigError(f"the BMC manages {len(members)} systems: name one in Redfish.BMC/System")
        return root.get_system(members[0])


def read_power(system: Any) -> str:
    return power_name(system.power_state)


def reset(system: Any, reset_type: str) -> None:
    import sushy

    system.reset_system(sushy.ResetType(reset_type))


def set_led(system: Any, state: str) -> str:
    import sushy

    system.set_indicator_led(sushy.IndicatorLED(state))
    system.refresh()
    return str(getattr(system.indicator_led, "value", system.indicator_led))


def read_inventory(system: Any) -> dict[str, Any]:
    """Model, serial, CPUs, memory and NICs with their MACs, as far as the BMC tells them."""
    from sushy import exceptions

    def optional(read: Any) -> Any:
        try:
            return read()
        except (exceptions.MissingAttributeError, exceptions.ResourceNotFoundError, AttributeError):
            return None

    summary = optional(lambda: system.processors.summary)
    nics = optional(lambda: system.ethernet_interfaces.get_members()) or []
    led = system.indicator_led
    return {
        "systemId": str(system.identity),
        "name": system.name or "",
        "uuid": system.uuid or "",
        "manufacturer": system.manufacturer or "",
        "model": system.model or "",
        "serial": system.serial_number or "",
        "sku": system.sku or "",
        "biosVersion": system.bios_version or "",
        "cpus": summary.count if summary is not None else None,
        "cpuArch": str(getattr(summary.architecture, "value", "")) if summary is not None else "",
        "memoryGiB": system.memory_summary.size_gib if system.memory_summary is not None else None,
        "nics": sorted(
            ({"id": str(n.identity), "mac": str(n.mac_address or "").lower()} for n in nics),
            key=lambda n: n["mac"],
        ),
        "indicatorLed": str(getattr(led, "value", led or "")),
        "error": "",
    }


def advertised_consoles(system: Any) -> list[str]:
    """The serial consoles the BMC advertises for *system*, as ``SSH (port 22)`` and the like."""
    found: list[str] = []
    documents = [system.json or {}]
    try:
        documents += [m.json or {} for m in system.managers]
    except Exception:  # a System without managers, or one the BMC will not show: nothing advertised
        pass
    for doc in documents:
        console = doc.get("SerialConsole")
        if not isinstance(console, dict):
            continue
        for kind in ("IPMI", "SSH", "Telnet"):
            service = console.get(kind)
            if isinstance(service, dict) and service.get("ServiceEnabled"):
                port = service.get("Port")
                found.append(f"{kind} (port {port})" if isinstance(port, int) else kind)
        if console.get("ServiceEnabled") and console.get("ConnectTypesSupported"):
            found += [str(t) for t in console["ConnectTypesSupported"] if isinstance(t, str)]
    return sorted(set(found))


class NoSerialConsole:
    """The "link" of a Redfish node's console: it reads what the BMC advertises, then ends with
    the error that says so (kraken bridges no Redfish console)."""

    def __init__(self, sink: ConsoleSink, found: Deferred[list[str]], where: str) -> None:
        self.sink = sink
        self.closed = False

        def tell(kinds: list[str]) -> None:
            if self.closed:
                return
            if not kinds:
                why = f"this BMC offers no serial console ({where} advertises no SerialConsole)"
            else:
                why = (
                    f"{where} offers its serial console over {', '.join(kinds)} only; kraken bridges "
                    "IPMI serial-over-LAN: give the node platform ipmi and an IPMI.BMC extension"
                )
            self.sink.ended(ActionError(409, "NO_SERIAL_CONSOLE", why))

        def failed(failure: Failure) -> None:
            if not self.closed:
                self.sink.ended(ActionError(502, "BMC_ERROR", f"{where}: {failure.getErrorMessage()}"))

        found.addCallbacks(tell, failed)

    def send(self, data: bytes) -> Deferred[None]:
        raise AssertionError("never connected")

    def close(self) -> None:
        self.closed = True


class RedfishPower(PolledPower):
    si = "redfish"
    module_url = "kraken.state.modules.redfish"
    platform = PLATFORM
    pool_name = "kraken-redfish"
    default_threads = 8
    reports = (INVENTORY.url,)
    actions = ("restart", "shutdown", "identify", "inventory")

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.settle = float(self.config.get("settle", 1.0))
        self.off_action = str(self.config.get("off", "ForceOff"))
        if self.off_action not in OFF_ACTIONS:
            raise ValueError(f"redfish: off must be one of {', '.join(OFF_ACTIONS)}")
        self.bmcs = Bmcs(
            float(self.config.get("read_timeout", 10.0)), float(self.config.get("connect_timeout", 5.0))
        )
        self._inventoried: set[str] = set()

    def declare_mutations(self) -> list[Mutation]:
        timeout = float(self.config.get("timeout", 60.0))
        return power_mutations(self.si, PLATFORM, timeout, float(self.config.get("hang_timeout", timeout)))

    def _run(self, settings: dict[str, Any], fn: Any, *args: Any) -> Deferred[Any]:
        return self.calls.call(self.bmcs.run, settings, fn, *args)

    # -- mutations --------------------------------------------------------------------------------
    def mutate(self, mutation: Mutation, cfg: Node, dsc: Node) -> None:
        assert self.api is not None
        api = self.api
        try:
            settings = bmc_of(cfg)
        except BMCConfigError as e:
            self._error(cfg.id, str(e))
            api.fail(self.si, cfg.id, mutation.id, str(e))
            return
        reset_type = {"OFFtoON": "On", "ONtoOFF": self.off_action, "HANGtoOFF": "ForceOff"}.get(mutation.id)
        want = "on" if mutation.id == "OFFtoON" else "off"
        generation = self.generation(cfg.id)

        def current() -> bool:
            return self.generation(cfg.id) == generation

        def failed(failure: Failure) -> None:
            if current():
                why = f"Redfish BMC {settings['url']}: {failure.getErrorMessage()}"
                self._error(cfg.id, why)
                api.fail(self.si, cfg.id, mutation.id, why)

        def seen(state: str) -> None:
            if not current():
                return
            if reset_type is None or state == want:
                self._seen(cfg.id, state)
                if cfg.id not in self._inventoried:
                    self.refresh_inventory(cfg).addErrback(lambda _: None)  # recorded in Dsc
                return
            api.clock.callLater(self.settle, check)

        def check() -> None:
            if current():
                self._run(settings, read_power).addCallbacks(seen, failed)

        if reset_type is None:
            check()
            return

        def sent(_: None) -> None:
            if current():
                check()

        self._run(settings, reset, reset_type).addCallbacks(sent, failed)

    def _seen(self, node_id: str, state: str) -> None:
        assert self.api is not None
        if state in ("on", "off"):
            self.api.discover(self.si, node_id, "/PhysState", "POWER_ON" if state == "on" else "POWER_OFF")

    def _error(self, node_id: str, why: str) -> None:
        assert self.api is not None
        dsc = self.api.dsc_node(node_id)
        if dsc is None:
            return
        body = dict(dsc.extensions.get(INVENTORY.url) or {})
        body["error"] = why
        self.api.report(self.si, node_id, INVENTORY.url, body)

    # -- inventory, polling, actions ------------------------------------------------------------------
    def refresh_inventory(self, cfg: Node) -> Deferred[dict[str, Any]]:
        assert self.api is not None
        api = self.api
        settings = bmc_of(cfg)
        self._inventoried.add(cfg.id)

        def read(body: dict[str, Any]) -> dict[str, Any]:
            api.report(self.si, cfg.id, INVENTORY.url, body)
            return body

        def failed(failure: Failure) -> Failure:
            self._inventoried.discard(cfg.id)
            why = f"Redfish BMC {settings['url']}: {failure.getErrorMessage()}"
            log.warn("inventory of {node} failed: {why}", node=cfg.id, why=why)
            self._error(cfg.id, why)
            return failure

        return self._run(settings, read_inventory).addCallbacks(read, failed)

    def poll(self) -> None:
        for cfg, settings in self.pollable(bmc_of):
            node_id = cfg.id

            def unreachable(failure: Failure, node_id: str = node_id) -> None:
                log.info("poll of {node}'s BMC failed: {why}", node=node_id, why=failure.getErrorMessage())

            def seen(state: str, cfg: Node = cfg) -> None:
                self._seen(cfg.id, state)
                if cfg.id not in self._inventoried:
                    self.refresh_inventory(cfg).addErrback(lambda _: None)  # recorded in Dsc

            self._run(settings, read_power).addCallbacks(seen, unreachable)

    def console(self, cfg: Node) -> Starter:
        try:
            settings = bmc_of(cfg)
        except BMCConfigError as e:
            raise ActionError(409, "NO_BMC", str(e)) from None

        def start(sink: ConsoleSink) -> NoSerialConsole:
            where = f"Redfish BMC {settings['url']}"
            return NoSerialConsole(sink, self._run(settings, advertised_consoles), where)

        return start

    def act(self, action: str, cfg: Node, args: dict[str, Any]) -> Deferred[dict[str, Any]]:
        try:
            settings = bmc_of(cfg)
        except BMCConfigError as e:
            raise ActionError(409, "NO_BMC", str(e)) from None

        def failed(failure: Failure) -> NoReturn:
            if failure.check(ActionError):
                failure.raiseException()
            raise ActionError(502, "BMC_ERROR", f"Redfish BMC {settings['url']}: {failure.getErrorMessage()}")

        if action == "inventory":
            return self.refresh_inventory(cfg).addCallbacks(lambda body: {"inventory": body}, failed)
        if action == "identify":
            led = args.get("led", "Lit")
            if led not in LED_STATES:
                raise ActionError(400, "BAD_ARGUMENT", f"led must be one of {', '.join(LED_STATES)}")
            return self._run(settings, set_led, led).addCallbacks(lambda state: {"led": state}, failed)
        reset_type = {"restart": "ForceRestart", "shutdown": "GracefulShutdown"}[action]
        return self._run(settings, reset, reset_type).addCallbacks(lambda _: {"reset": reset_type}, failed)
