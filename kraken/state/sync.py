"""Parent/child state sync over mutual TLS (thin Twisted adapters around :mod:`sync_wire`).

A child phones home (HELLO with its id); its certificate must name that node (common name =
node id or nodename) and the node must be in the parent's Cfg. The parent marks the child
SYNC and answers WELCOME with the child's Cfg and Dsc; from then on intent flows down (CFG)
and observation flows up (DSC), each sent on every change and at least every ``hello``
seconds. Nothing heard for ``dead`` seconds, or the connection lost, marks the other side
ERROR; a child then phones home again every ``hello`` seconds until it succeeds.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.core.endpoints import connect
from kraken.core.tls import TLSSettings
from kraken.core.transport import IStreamTransport
from kraken.state import model
from kraken.state.events import ChangeKind, Event, EventType
from kraken.state.model import ModelError, Node, PhysState, RunState
from kraken.state.service import SSE, StateService
from kraken.state.sync_wire import Decoder, Kind, Message, WireError, encode

log = Logger(namespace="kraken.state.sync")


def parse_parent(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"parent must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class SyncProtocol(Protocol):
    """Framing, the dead timer and the periodic hello shared by both ends."""

    transport: IStreamTransport
    clock: IReactorTime
    hello: float
    dead: float

    def __init__(self) -> None:
        self.decoder = Decoder()
        self._dead_call: IDelayedCall | None = None
        self._hello_call: IDelayedCall | None = None
        self._push_call: IDelayedCall | None = None
        self.closed = False

    def send(self, kind: Kind, body: dict[str, Any]) -> None:
        if not self.closed:
            self.transport.write(encode(kind, body))

    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            for message in self.decoder.feed(data):
                self._heard()
                try:
                    self.received(message)
                except ModelError as e:
                    self.refuse(f"bad {message.kind.name}: {e}")
                    return
                if self.closed:
                    return
        except WireError as e:
            self.refuse(f"protocol error: {e.reason}")

    def received(self, message: Message) -> None:
        raise NotImplementedError

    def refuse(self, message: str) -> None:
        log.warn("sync with {peer}: {message}", peer=self.describe(), message=message)
        self.send(Kind.ERROR, {"message": message})
        self.close()

    def describe(self) -> str:
        peer = getattr(self.transport, "peer", None)
        return peer.name if peer is not None else str(self.transport.getPeer() if self.transport else "?")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._stop_timers()
            self.transport.loseConnection()

    def _heard(self) -> None:
        if self._dead_call is not None and self._dead_call.active():
            self._dead_call.reset(self.dead)
        else:
            self._dead_call = self.clock.callLater(self.dead, self._dead)

    def _dead(self) -> None:
        self._dead_call = None
        log.warn("sync neighbour {peer} silent for {dead}s: dead", peer=self.describe(), dead=self.dead)
        self.went_dead()
        self.close()
        if self.transport is not None:
            self.transport.abortConnection()

    def went_dead(self) -> None:
        pass

    def start_hello(self) -> None:
        self._hello_call = self.clock.callLater(self.hello, self._hello_tick)

    def _hello_tick(self) -> None:
        self._hello_call = None
        if self.closed:
            return
        self.push()
        self.start_hello()

    def push_soon(self) -> None:
        if self._push_call is None and not self.closed:
            self._push_call = self.clock.callLater(0, self._push_now)

    def _push_now(self) -> None:
        self._push_call = None
        if not self.closed:
            self.push()

    def push(self) -> None:
        raise NotImplementedError

    def _stop_timers(self) -> None:
        for name in ("_dead_call", "_hello_call", "_push_call"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        self._stop_timers()
        self.lost()

    def lost(self) -> None:
        pass


# -- parent side ---------------------------------------------------------------------------------
class ChildLink(SyncProtocol):
    """On the parent: one connected child."""

    factory: SyncServerFactory

    def __init__(self) -> None:
        super().__init__()
        self.node_id: str | None = None

    def connectionMade(self) -> None:
        self.clock, self.hello, self.dead = self.factory.clock, self.factory.hello, self.factory.dead
        self._heard()

    def received(self, message: Message) -> None:
        if self.node_id is None:
            if message.kind is not Kind.HELLO:
                self.refuse(f"expected HELLO, got {message.kind.name}")
                return
            self._hello(message.body)
        elif message.kind is Kind.DSC:
            node = model.from_json(message.body.get("node"))
            if node.id != self.node_id:
                self.refuse(f"DSC for {node.id}, but this link is {self.node_id}")
                return
            self.factory.apply_dsc(node)
        elif message.kind is Kind.ERROR:
            log.warn("child {id} reports: {m}", id=self.node_id, m=message.body.get("message"))
            self.close()
        else:
            self.refuse(f"unexpected {message.kind.name}")

    def _hello(self, body: dict[str, Any]) -> None:
        state = self.factory.state
        try:
            node_id = model.canonical_id(body.get("id"))
        except ModelError as e:
            self.refuse(str(e))
            return
        cfg = state.store.cfg.get(node_id)
        if cfg is None:
            self.refuse(f"node {node_id} is not in this kraken's Cfg")
            return
        peer = getattr(self.transport, "peer", None)
        if peer is None or peer.name not in (cfg.id, cfg.nodename):
            who = peer.name if peer is not None else "no certificate"
            self.refuse(f"certificate ({who}) does not name node {node_id} ({cfg.nodename or 'no nodename'})")
            return
        self.node_id = node_id
        self.factory.attach(self)
        self.send(
            Kind.WELCOME,
            {
                "parent": state.self_id,
                "cfg": model.to_json(state.store.cfg[node_id]),
                "dsc": model.to_json(state.store.dsc[node_id]),
                "hello": self.hello,
                "dead": self.dead,
            },
        )
        self.start_hello()

    def push(self) -> None:
        if self.node_id is not None and self.node_id in self.factory.state.store.cfg:
            self.send(Kind.CFG, {"node": model.to_json(self.factory.state.store.cfg[self.node_id])})

    def went_dead(self) -> None:
        self.factory.detach(self)

    def lost(self) -> None:
        self.factory.detach(self)


class SyncServerFactory(Factory[ChildLink]):
    """The parent's listener; knows which child is connected and pushes Cfg changes to it."""

    protocol = ChildLink
    noisy = False

    def __init__(
        self, state: StateService, clock: IReactorTime, hello: float = 10.0, dead: float = 40.0
    ) -> None:
        self.state = state
        self.clock = clock
        self.hello = hello
        self.dead = dead
        self.children: dict[str, ChildLink] = {}
        state.bus.subscribe("sync-parent", [EventType.STATE_CHANGE], self._changed)

    def _changed(self, event: Event) -> None:
        node_id = event.url.partition(":")[0]
        link = self.children.get(node_id)
        if link is None:
            return
        kind = event.data.kind
        if kind is ChangeKind.CFG_UPDATE:
            link.push_soon()
        elif kind is ChangeKind.DELETE:
            self.children.pop(node_id, None)
            link.close()

    def attach(self, link: ChildLink) -> None:
        assert link.node_id is not None
        old = self.children.get(link.node_id)
        self.children[link.node_id] = link
        if old is not None and old is not link:
            old.close()
        engine, dsc = self.state.engine, self.state.store.dsc[link.node_id]
        if dsc.phys_state is not PhysState.POWER_ON:
            engine.discover(SSE, link.node_id, "/PhysState", "POWER_ON")  # it talks, so it is on
        engine.discover(SSE, link.node_id, "/RunState", "SYNC")
        log.info("child {id} phoned home", id=link.node_id)

    def detach(self, link: ChildLink) -> None:
        if link.node_id is None or self.children.get(link.node_id) is not link:
            return
        del self.children[link.node_id]
        if link.node_id in self.state.store.dsc:
            self.state.engine.discover(SSE, link.node_id, "/RunState", "ERROR")
        log.warn("child {id} lost", id=link.node_id)

    def apply_dsc(self, node: Node) -> None:
        node.run_state = RunState.SYNC
        self.state.store.update_dsc(node)


# -- child side ------------------------------------------------------------------------------------
class ParentLink(SyncProtocol):
    """On the child: the connection to our parent."""

    def __init__(self, owner: SyncClientService) -> None:
        super().__init__()
        self.owner = owner
        self.clock, self.hello, self.dead = owner.clock, owner.hello, owner.dead
        self.welcomed = False

    def connectionMade(self) -> None:
        self._heard()
        self.send(Kind.HELLO, {"id": self.owner.state.self_id})

    def received(self, message: Message) -> None:
        if message.kind is Kind.ERROR:
            log.error("parent refused us: {m}", m=message.body.get("message"))
            self.close()
        elif message.kind is Kind.WELCOME and not self.welcomed:
            self.welcomed = True
            self.owner.welcome(self, message.body)
            self.start_hello()
        elif message.kind is Kind.CFG and self.welcomed:
            self.owner.apply_cfg(model.from_json(message.body.get("node")))
        else:
            self.refuse(f"unexpected {message.kind.name}")

    def push(self) -> None:
        state = self.owner.state
        self.send(Kind.DSC, {"node": model.to_json(state.store.dsc[state.self_id])})

    def went_dead(self) -> None:
        self.owner.parent_lost(self)

    def lost(self) -> None:
        self.owner.parent_lost(self)


class SyncClientService(Service):
    """The child's side: phone home, keep the link, phone home again when it breaks."""

    def __init__(
        self,
        state: StateService,
        clock: IReactorTime,
        host: str,
        port: int,
        tls: TLSSettings,
        hello: float = 10.0,
        dead: float = 40.0,
    ) -> None:
        self.state = state
        self.clock = clock
        self.host = host
        self.port = port
        self.tls = tls
        self.hello = hello
        self.dead = dead
        self.link: ParentLink | None = None
        self._retry: IDelayedCall | None = None
        self.parent_id: str | None = None
        state.bus.subscribe("sync-child", [EventType.STATE_CHANGE], self._changed)

    def startService(self) -> None:
        super().startService()
        self._phone_home()

    def stopService(self) -> None:
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self.link is not None:
            self.link.close()

    def _phone_home(self) -> None:
        self._retry = None
        if not self.running:
            return
        factory = Factory.forProtocol(lambda: ParentLink(self))
        factory.noisy = False
        d = connect(
            self.clock, self.host, self.port, factory, self.tls, ["state"], timeout=max(self.hello, 1.0)
        )
        d.addCallbacks(self._connected, self._failed)

    def _connected(self, link: ParentLink) -> None:
        self.link = link

    def _failed(self, failure: Failure) -> None:
        log.info(
            "phone home to {h}:{p} failed: {why}", h=self.host, p=self.port, why=failure.getErrorMessage()
        )
        self._schedule()

    def _schedule(self) -> None:
        if self.running and self._retry is None:
            self._retry = self.clock.callLater(self.hello, self._phone_home)

    def welcome(self, link: ParentLink, body: dict[str, Any]) -> None:
        store, me = self.state.store, self.state.self_id
        cfg = model.from_json(body.get("cfg"))
        dsc = model.from_json(body.get("dsc"))
        if cfg.id != me or dsc.id != me:
            raise ModelError(f"WELCOME carries node {cfg.id}, we are {me}")
        own = store.dsc[me]
        dsc.phys_state, dsc.run_state = PhysState.POWER_ON, RunState.SYNC
        dsc.services = {k: v for k, v in own.services.items()}
        store.update(cfg)
        store.update_dsc(dsc)
        self.parent_id = str(body.get("parent", ""))
        log.info("phoned home to parent {p}", p=self.parent_id)
        if not self.state.start_frozen:
            self.state.engine.thaw()
        link.push()

    def apply_cfg(self, node: Node) -> None:
        if node.id != self.state.self_id:
            raise ModelError(f"CFG for {node.id}, we are {self.state.self_id}")
        self.state.store.update(node)

    def parent_lost(self, link: ParentLink) -> None:
        if self.link is not link and self.link is not None:
            return
        was_welcomed = link.welcomed
        self.link = None
        if was_welcomed:
            log.warn("lost our parent {h}:{p}; phoning home again", h=self.host, p=self.port)
            self.state.engine.discover(SSE, self.state.self_id, "/RunState", "ERROR")
        self._schedule()

    def _changed(self, event: Event) -> None:
        if event.data.kind is not ChangeKind.UPDATE or self.link is None or not self.link.welcomed:
            return
        if event.url.startswith(self.state.self_id + ":"):
            self.link.push_soon()
