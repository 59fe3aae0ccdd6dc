"""Network boot: DHCP, TFTP and an HTTP boot endpoint driven by each node's Cfg.

A node boots from this kraken when its Cfg carries the ``PXE.Client`` extension with its boot
MAC and address and a ``State`` other than NONE. Its Dsc then follows the boot, each step with a
timeout whose fail-to is ``PHYS_HANG``:

- NONE → WAIT: the node is armed (done at once, once it is powered on);
- WAIT → INIT: its DHCP request was answered (the PXE ROM, chain-loaded into iPXE);
- INIT → FETCHED: iPXE loaded its kernel and initrd through a kraken agent and chained
  ``/boot/<node>/fetched``;
- FETCHED → BOOTED: the booted system posted ``/boot/<node>/booted`` from the node's address.

``PXE.Client`` fields: ``mac``, ``ip``, ``prefix`` (24), ``router``, ``state``, ``kernel`` and
``initrd`` (blob digests), ``cmdline``, ``agent`` (the agent URL nodes fetch through; the module's
``agent_url`` when unset). Unknown MACs get no DHCP answer and unknown addresses no script.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorUDP
from twisted.logger import Logger
from twisted.web.server import Request

from kraken.core.http import HTTPError, Response, Router, make_site
from kraken.core.metrics import Metrics
from kraken.netboot.bootroot import BootFileError, BootFiles, confined
from kraken.netboot.dhcp_server import DhcpProtocol, DhcpResponder, Lease
from kraken.netboot.dhcp_wire import MessageType
from kraken.netboot.script import BootScriptError, checked_image, failing, render
from kraken.netboot.tftp_server import MAX_DATAGRAM, TFTPServer
from kraken.state import model
from kraken.state.model import ExtensionType, Node, register_extension
from kraken.state.modules.base import Context, Module, ModuleAPI, Mutation, declare
from kraken.state.modules.power import HANG

log = Logger(namespace="kraken.state.pxe")


class PXEState(IntEnum):
    NONE = 0
    WAIT = 1
    INIT = 2
    FETCHED = 3
    BOOTED = 4


CLIENT = register_extension(ExtensionType("PXE.Client", {"/State": PXEState}))
STATE = CLIENT.url + "/State"
BOOT_SCRIPT = b"#!ipxe\nboot\n"


@dataclass(frozen=True)
class BootNode:
    node_id: str
    nodename: str
    lease: Lease
    settings: dict[str, Any]


class BootTable:
    """MAC → node and address → node for every node that boots from here, rebuilt at most once
    a second from the Cfg store (a boot storm asks for the same table many times)."""

    def __init__(self, api: ModuleAPI, max_age: float = 1.0) -> None:
        self.api = api
        self.max_age = max_age
        self.built_at = -max_age
        self.by_mac: dict[str, BootNode] = {}
        self.by_ip: dict[str, BootNode] = {}

    def refresh(self) -> None:
        now = self.api.clock.seconds()
        if now - self.built_at < self.max_age:
            return
        self.built_at = now
        self.by_mac, self.by_ip = {}, {}
        for cfg in self.api.cfg_nodes():
            node = boot_node(cfg)
            if node is not None:
                self.by_mac[node.lease.mac] = node
                self.by_ip[node.lease.ip] = node

    def mac(self, mac: str) -> BootNode | None:
        self.refresh()
        return self.by_mac.get(mac.lower())

    def ip(self, ip: str) -> BootNode | None:
        self.refresh()
        return self.by_ip.get(ip)


def boot_node(cfg: Node) -> BootNode | None:
    ext = cfg.extensions.get(CLIENT.url)
    try:
        wanted = model.get_value(cfg, STATE)
    except model.ModelError:
        return None
    if not ext or wanted in (None, PXEState.NONE):
        return None
    mac, ip = ext.get("mac"), ext.get("ip")
    if not isinstance(mac, str) or not isinstance(ip, str):
        return None
    prefix = ext.get("prefix", 24)
    lease = Lease(
        mac.lower(), ip, prefix if isinstance(prefix, int) else 24,
        hostname=cfg.nodename, router=str(ext.get("router") or ""),
    )  # fmt: skip
    return BootNode(cfg.id, cfg.nodename, lease, ext)


class PxeBoot(Module):
    si = "pxe"
    module_url = "kraken.state.modules.pxe"

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config)
        self.ports: list[IListeningPort] = []
        self.table: BootTable | None = None

    def declare_mutations(self) -> list[Mutation]:
        c = self.config
        steps = [
            ("NONEtoWAIT", "NONE", "WAIT", 10.0),
            ("WAITtoINIT", "WAIT", "INIT", float(c.get("dhcp_timeout", 120.0))),
            ("INITtoFETCHED", "INIT", "FETCHED", float(c.get("fetch_timeout", 300.0))),
            ("FETCHEDtoBOOTED", "FETCHED", "BOOTED", float(c.get("boot_timeout", 300.0))),
        ]
        on = {"/PhysState": "POWER_ON"}
        return [
            declare(self.si, mid, {STATE: (a, b)}, on, context=Context.CHILD, timeout=t, fail_to=HANG)
            for mid, a, b, t in steps
        ]

    def mutate(self, mutation: Mutation, cfg: Node, dsc: Node) -> None:
        assert self.api is not None
        if mutation.id == "NONEtoWAIT":
            self.api.discover(self.si, cfg.id, STATE, "WAIT")
        # The other steps wait for evidence from the node: DHCP, the chain request, the report.

    # -- the servers --------------------------------------------------------------------------
    def start(self, api: ModuleAPI) -> None:
        super().start(api)
        c = self.config
        server_ip = c.get("server_ip")
        if not isinstance(server_ip, str) or not server_ip:
            raise ValueError("module pxe needs server_ip: the address nodes reach this kraken at")
        self.table = BootTable(api)
        self.boot_url = str(c.get("boot_url") or f"http://{server_ip}:{int(c.get('http_port', 8069))}")
        self.agent_url = str(c.get("agent_url") or "")
        self.namespace = str(c.get("namespace", "boot"))
        self.boot_root = Path(str(c.get("boot_root", "/usr/lib/ipxe")))
        reactor: Any = api.reactor
        if not (IReactorUDP.providedBy(reactor) and IReactorTCP.providedBy(reactor)):
            return  # driven by a test clock: no sockets
        script_url = f"{self.boot_url}/boot/kraken.ipxe"
        responder = DhcpResponder(server_ip, self.lease_of, script_url, self.dhcp_seen)
        dhcp = DhcpProtocol(responder, str(c.get("interface", "")))
        tftp = TFTPServer(BootFiles(self.boot_root, self.script_for), reactor, api.clock, interface=server_ip)
        self.ports.append(reactor.listenUDP(int(c.get("dhcp_port", 67)), dhcp, "", MAX_DATAGRAM))
        self.ports.append(reactor.listenUDP(int(c.get("tftp_port", 69)), tftp, server_ip, MAX_DATAGRAM))
        site: Any = make_site(self.router(), Metrics("state-boot"), reactor=api.clock)
        self.ports.append(reactor.listenTCP(int(c.get("http_port", 8069)), site, 50, server_ip))
        log.info("pxe boot serving DHCP, TFTP and {url} for nodes", url=self.boot_url)

    def stop(self) -> Any:
        for port in self.ports:
            port.stopListening()
        self.ports = []

    def lease_of(self, mac: str) -> Lease | None:
        assert self.table is not None
        node = self.table.mac(mac)
        return node.lease if node is not None else None

    def dhcp_seen(self, lease: Lease, kind: MessageType, pxe_client: bool) -> None:
        assert self.table is not None and self.api is not None
        node = self.table.mac(lease.mac)
        # The booted OS asks for its lease again; only the ROM's or iPXE's request is boot evidence.
        if node is not None and kind == MessageType.REQUEST and pxe_client:
            self.api.discover(self.si, node.node_id, STATE, "INIT")

    def script_for(self, client_ip: str) -> bytes | None:
        assert self.table is not None
        node = self.table.ip(client_ip)
        if node is None:
            return None
        s = node.settings
        try:
            image = checked_image(node.node_id, s.get("kernel"), s.get("initrd"), s.get("cmdline"))
            agent = str(s.get("agent") or self.agent_url)
            if not agent:
                raise BootScriptError(f"node {node.node_id}: no agent_url to fetch the image through")
        except BootScriptError as e:
            log.warn("pxe cannot boot {node}: {why}", node=node.node_id, why=str(e))
            return failing(node.node_id, str(e))
        return render(node.node_id, node.nodename, image, agent, self.boot_url, self.namespace)

    # -- HTTP ----------------------------------------------------------------------------------
    def router(self) -> Router:
        r = Router()
        r.route("GET", "/boot/kraken.ipxe", self.http_script)
        r.route("GET", "/boot/{node}/fetched", self.http_fetched)
        r.route(["GET", "POST"], "/boot/{node}/booted", self.http_booted)
        r.route("GET", "/boot/files/{path:.+}", self.http_file)
        return r

    def _caller(self, request: Request, node_id: str) -> BootNode:
        assert self.table is not None
        node = self.table.ip(str(request.getClientAddress().host))
        if node is None or node.node_id != node_id:
            raise HTTPError(403, "NOT_THIS_NODE", "reports are taken only from the node's own boot address")
        return node

    def http_script(self, request: Request) -> Response:
        script = self.script_for(str(request.getClientAddress().host))
        if script is None:
            raise HTTPError(404, "UNKNOWN_NODE", "no node boots from this server at your address")
        return Response(200, script, {"content-type": "text/plain"})

    def http_fetched(self, request: Request, node: str) -> Response:
        assert self.api is not None
        self.api.discover(self.si, self._caller(request, node).node_id, STATE, "FETCHED")
        return Response(200, BOOT_SCRIPT, {"content-type": "text/plain"})

    def http_booted(self, request: Request, node: str) -> dict[str, str]:
        assert self.api is not None
        self.api.discover(self.si, self._caller(request, node).node_id, STATE, "BOOTED")
        return {"node": node, "state": "BOOTED"}

    def http_file(self, request: Request, path: str) -> Response:
        try:
            real = confined(self.boot_root, path)
        except BootFileError as e:
            raise HTTPError(404 if e.missing else 403, "NO_SUCH_FILE", str(e)) from None
        return Response(200, real.read_bytes(), {"content-type": "application/octet-stream"})

