"""Discovery: scan configured address ranges for BMCs (Redfish and IPMI), read what each manages
and hold the machines found as *discovered* candidates until an operator accepts (a Cfg node is
created with the BMC settings and, for Redfish, the inventory in its Dsc) or rejects them.

Nothing found is driven before it is accepted. Candidates live in memory and are found again by
the next scan; a rejected one is not offered again until the server restarts.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.state import model
from kraken.state.model import Node
from kraken.state.modules import ipmi, redfish
from kraken.state.modules.blocking import BlockingCalls
from kraken.state.store import StateStore, StoreError

log = Logger(namespace="kraken.state.discovery")
MAX_TARGETS = 65536


class RangeError(ValueError):
    pass


def _hosts(spec: str) -> list[str]:
    """``10.0.0.5``, ``10.0.0.1-10.0.0.20``, ``10.0.0.1-20`` or ``10.0.0.0/28`` (its hosts)."""
    try:
        if "/" in spec:
            net = ipaddress.ip_network(spec, strict=False)
            if net.num_addresses > MAX_TARGETS:
                raise RangeError(f"host range {spec!r} is over {MAX_TARGETS} addresses")
            hosts = [str(h) for h in net.hosts()] or [str(net.network_address)]
            return hosts
        if "-" in spec:
            first, _, last = spec.partition("-")
            start = ipaddress.ip_address(first)
            end = ipaddress.ip_address(last) if "." in last or ":" in last else None
            if end is None:
                end = ipaddress.ip_address(first.rsplit(".", 1)[0] + "." + last)
            if int(end) < int(start) or int(end) - int(start) >= MAX_TARGETS:
                raise RangeError(f"host range {spec!r} is empty or over {MAX_TARGETS} addresses")
            return [str(ipaddress.ip_address(int(start) + i)) for i in range(int(end) - int(start) + 1)]
        return [str(ipaddress.ip_address(spec))]
    except ValueError as e:
        raise RangeError(f"bad host range {spec!r}: {e}") from None


def _ports(spec: str, default: int) -> list[int]:
    if not spec:
        return [default]
    first, _, last = spec.partition("-")
    if not first.isdigit() or (last and not last.isdigit()):
        raise RangeError(f"bad port range {spec!r}")
    lo, hi = int(first), int(last or first)
    if not 0 < lo <= hi < 65536:
        raise RangeError(f"bad port range {spec!r}")
    return list(range(lo, hi + 1))


def redfish_targets(spec: str) -> list[str]:
    """``http[s]://HOSTS[:PORTS]`` → base URLs; HOSTS and PORTS may be ranges."""
    scheme, sep, rest = spec.partition("://")
    if scheme not in ("http", "https") or not sep or not rest.strip("/"):
        raise RangeError(f"redfish range {spec!r}: expected http[s]://HOSTS[:PORTS]")
    rest = rest.rstrip("/")
    host, _, ports = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    default = 443 if scheme == "https" else 80
    return [f"{scheme}://{h}:{p}" for h in _hosts(host) for p in _ports(ports, default)]


def ipmi_targets(spec: str) -> list[tuple[str, int]]:
    """``HOSTS[:PORTS]`` → (host, port); the port defaults to 623."""
    host, _, ports = spec.rpartition(":") if spec.count(":") == 1 else (spec, "", "")
    return [(h, p) for h in _hosts(host) for p in _ports(ports, 623)]


@dataclass
class Candidate:
    id: str
    kind: str  # redfish | ipmi
    bmc: dict[str, Any]  # the BMC extension the accepted node gets
    inventory: dict[str, Any]
    state: str = "discovered"  # discovered | accepted | rejected

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "platform": self.kind, "state": self.state,
                "bmc": {k: v for k, v in self.bmc.items() if k != "password"}, "inventory": self.inventory}


@dataclass
class Scan:
    started: float
    targets: int
    finished: float | None = None
    found: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"started": self.started, "finished": self.finished, "targets": self.targets,
                "found": self.found, "errors": self.errors[:100]}


def _redfish_probe(url: str, creds: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    """Blocking: every system a Redfish BMC manages, with its inventory."""
    import sushy
    from sushy import auth

    root = sushy.Sushy(
        redfish.base_url(url), auth=auth.BasicAuth(creds["user"], creds["password"]),
        verify=creds["verify"], server_side_retries=1, server_side_retries_delay=0.5,
        read_timeout=timeout, connect_timeout=timeout,
    )
    out = []
    for member in root.get_system_collection().members_identities:
        system = root.get_system(member)
        inventory = redfish.read_inventory(system)
        inventory["powerState"] = redfish.power_name(system.power_state)
        out.append(inventory)
    return out


def _ipmi_probe(commands: ipmi.CommandCache, host: str, port: int, creds: dict[str, Any]) -> dict[str, Any]:
    """Blocking: read an IPMI BMC's power and GUID (through one reused session per BMC: pyghmi
    makes a second session to the same BMC wait on the first)."""
    settings = {"bmc": host, "port": port, "userid": creds["user"], "password": creds["password"]}

    def read(cmd: Any) -> dict[str, Any]:
        power = str(cmd.get_power()["powerstate"])
        answer = cmd.raw_command(netfn=6, command=0x37)  # Get System GUID
        data = bytes(answer.get("data", b"")) if "error" not in answer else b""
        return {"powerState": power, "guid": str(uuid.UUID(bytes_le=data)) if len(data) == 16 else ""}

    return dict(commands.run(settings, read))


class Discovery(Service):
    """Scans on demand (``scan``) and every ``interval`` seconds (0: at start only)."""

    def __init__(
        self,
        store: StateStore,
        clock: IReactorTime,
        config: dict[str, Any],
        report: Callable[[str, dict[str, Any]], object] = lambda node_id, inventory: None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.report = report
        unknown = set(config) - {"redfish", "ipmi", "user", "password", "passwordFile", "verify",
                                 "interval", "threads", "parentId", "timeout"}
        if unknown:
            raise RangeError(f"discovery: unknown key {sorted(unknown)[0]!r}")
        self.redfish = [t for spec in config.get("redfish", []) for t in redfish_targets(str(spec))]
        self.ipmi = [t for spec in config.get("ipmi", []) for t in ipmi_targets(str(spec))]
        if len(self.redfish) + len(self.ipmi) > MAX_TARGETS:
            raise RangeError(f"discovery: more than {MAX_TARGETS} targets")
        password = config.get("password")
        self.password_file = config.get("passwordFile")
        if password is None and self.password_file:
            try:
                password = Path(self.password_file).read_text().strip()
            except OSError as e:
                raise RangeError(f"discovery: cannot read passwordFile: {e.strerror}") from None
        verify = config.get("verify", True)
        self.creds = {"user": str(config.get("user", "")), "password": str(password or ""), "verify": verify}
        self.interval = float(config.get("interval", 0))
        self.parent_id = str(config.get("parentId", "") or "")
        self.timeout = float(config.get("timeout", 5.0))
        self.calls = BlockingCalls("kraken-discovery", int(config.get("threads", 16)))
        self.ipmi_commands = ipmi.CommandCache()
        self.candidates: dict[str, Candidate] = {}
        self.scans = 0
        self.last: Scan | None = None
        self.running_scan: Deferred[None] | None = None
        self._next: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()
        self.calls.start(self.clock, self.calls.stop)
        if self.redfish or self.ipmi:
            self.scan()

    def stopService(self) -> None:
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self.calls.stop()

    # -- scanning ----------------------------------------------------------------------------------
    def scan(self) -> Deferred[None]:
        """Start a scan (or give the running one); fires when it is done."""
        if self.running_scan is not None:
            return self.running_scan
        scan = Scan(self.clock.seconds(), len(self.redfish) + len(self.ipmi))
        self.last = scan
        self.scans += 1
        probes: list[Deferred[Any]] = []
        for url in self.redfish:
            found = self.calls.call(_redfish_probe, url, self.creds, self.timeout)
            probes.append(
                found.addCallback(self._found_redfish, url, scan).addErrback(self._failed, url, scan)
            )
        for host, port in self.ipmi:
            answer = self.calls.call(_ipmi_probe, self.ipmi_commands, host, port, self.creds)
            probes.append(
                answer.addCallback(self._found_ipmi, host, port, scan).addErrback(
                    self._failed, f"ipmi://{host}:{port}", scan
                )
            )
        self.running_scan = DeferredList(probes, consumeErrors=True).addCallback(self._done, scan)
        return self.running_scan

    def _done(self, _: Any, scan: Scan) -> None:
        scan.finished = self.clock.seconds()
        self.running_scan = None
        log.info("discovery scan of {n} targets: {found} machines, {e} errors",
                 n=scan.targets, found=scan.found, e=len(scan.errors))
        if self.interval > 0 and self.running:
            self._next = self.clock.callLater(self.interval, self.scan)

    def _failed(self, failure: Failure, target: str, scan: Scan) -> None:
        log.info("discovery: nothing usable at {target}: {why}", target=target, why=failure.getErrorMessage())
        scan.errors.append({"target": target, "error": failure.getErrorMessage()[:300]})

    def _offer(self, candidate: Candidate, scan: Scan) -> None:
        scan.found += 1
        old = self.candidates.get(candidate.id)
        if old is not None and old.state != "discovered":
            return  # accepted or rejected: the operator has decided
        if candidate.id in self.store.cfg:
            candidate.state = "accepted"
        self.candidates[candidate.id] = candidate

    def _found_redfish(self, systems: list[dict[str, Any]], url: str, scan: Scan) -> None:
        for inventory in systems:
            bmc = {"url": url, "system": inventory["systemId"], "user": self.creds["user"]}
            bmc.update(self._secret())
            if self.creds["verify"] is not True:
                bmc["verify"] = self.creds["verify"]
            self._offer(Candidate(_node_id(inventory.get("uuid", ""), url, inventory["systemId"]),
                                  "redfish", bmc, inventory), scan)

    def _found_ipmi(self, inventory: dict[str, Any], host: str, port: int, scan: Scan) -> None:
        bmc = {"host": host, "port": port, "user": self.creds["user"], **self._secret()}
        self._offer(Candidate(_node_id(inventory.get("guid", ""), f"ipmi://{host}:{port}", ""), "ipmi",
                              bmc, inventory), scan)

    def _secret(self) -> dict[str, Any]:
        if self.password_file:
            return {"passwordFile": str(self.password_file)}
        return {"password": self.creds["password"]}

    # -- operator decisions --------------------------------------------------------------------------
    def get(self, node_id: str) -> Candidate:
        c = self.candidates.get(node_id)
        if c is None:
            raise StoreError(404, "NOT_DISCOVERED", f"no discovered machine {node_id}")
        return c

    def accept(self, node_id: str, nodename: str = "", parent_id: str = "") -> Node:
        """Create the Cfg node of a discovered machine (its Dsc gets the Redfish inventory)."""
        c = self.get(node_id)
        if c.state == "rejected":
            raise StoreError(409, "REJECTED", f"machine {node_id} was rejected")
        node = Node(c.id)
        node.platform = c.kind
        node.nodename = nodename or str(c.inventory.get("name") or "")
        node.parent_id = model.canonical_id(parent_id) if parent_id else self.parent_id
        ext = redfish.BMC if c.kind == "redfish" else ipmi.BMC
        node.extensions[ext.url] = dict(c.bmc)
        created = self.store.create(node)
        c.state = "accepted"
        if c.kind == "redfish":
            self.report(c.id, dict(c.inventory, error=""))
        return created

    def reject(self, node_id: str) -> Candidate:
        c = self.get(node_id)
        if c.state == "accepted":
            raise StoreError(409, "ACCEPTED", f"machine {node_id} is a node already; delete the node instead")
        c.state = "rejected"
        return c


def _node_id(found: str, url: str, system: str) -> str:
    """The machine's own UUID when the BMC gives one, else one derived from where it was found."""
    try:
        value = uuid.UUID(found)
        if value.int:
            return str(value)
    except ValueError:
        pass
    return model.name_to_uuid(f"{url}/{system}")

