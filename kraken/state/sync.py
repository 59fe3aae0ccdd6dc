"""Parent/child state sync over mutual TLS (thin Twisted adapters around :mod:`sync_wire`).

A child phones home (HELLO with its id); its certificate must name that node (common name =
node id or nodename) and the node must be in the parent's Cfg. The parent marks the child
SYNC and answers WELCOME with the child's Cfg and Dsc; from then on intent flows down (CFG)
and observation flows up (DSC), each sent on every change and at least every ``hello``
seconds. Nothing heard for ``dead`` seconds, or the connection lost, marks the other side
ERROR; a child then phones home again every ``hello`` seconds until it succeeds, trying its
fallback parents in turn.

A sub-master is a child that is also a parent: its parent sends it the Cfg of every node below
it (CFG_NODES, in batches) and it reports their Dsc (DSC_NODES), so the top sees every node.
A parent takes a node's Dsc only from the link nearest to that node (a leaf that re-parented
to its fallback is heard directly, not through its stale sub-master).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.core.endpoints import connect
from kraken.core.jsontext import compact
from kraken.core.tls import TLSSettings
from kraken.core.transport import IStreamTransport
from kraken.state import model
from kraken.state.events import ChangeKind, Event, EventType
from kraken.state.model import ModelError, Node, PhysState, RunState
from kraken.state.service import SSE, StateService
from kraken.state.sync_wire import Decoder, Kind, Message, WireError, encode, encode_batches

log = Logger(namespace="kraken.state.sync")
MAX_DEPTH = 64
CHUNK = 500  # nodes of a batch applied per reactor turn
WAVE = 1000  # a sub-master that reported this many nodes at once gathers its next report longer
_CFG_KINDS = (ChangeKind.CFG_UPDATE, ChangeKind.CREATE, ChangeKind.DELETE)


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
        self._drain_call: IDelayedCall | None = None
        self.backlog: deque[Any] = deque()
        self.paused = False
        self.closed = False

    def send(self, kind: Kind, body: dict[str, Any]) -> None:
        if not self.closed:
            self.transport.write(encode(kind, body))

    def later(self, work: Callable[[], None], items: list[Any]) -> None:
        """Queue *items* for ``work`` (which takes them from :attr:`backlog`), :data:`CHUNK` per
        reactor turn, and stop reading from the peer while behind: a batch of thousands of nodes
        never holds the reactor for long (REST, websocket and other links keep being served)."""
        self.backlog.extend(items)
        if self._drain_call is None:
            if not self.paused:
                self.paused = True
                self.transport.pauseProducing()
            self._drain_call = self.clock.callLater(0, self._drain, work)

    def _drain(self, work: Callable[[], None]) -> None:
        self._drain_call = None
        if self.closed:
            self.backlog.clear()
            return
        work()
        if self.backlog:
            self._drain_call = self.clock.callLater(0, self._drain, work)
        elif self.paused:
            self.paused = False
            self.transport.resumeProducing()

    def take(self) -> list[Any]:
        chunk = [self.backlog.popleft() for _ in range(min(CHUNK, len(self.backlog)))]
        return chunk

    def send_nodes(self, kind: Kind, nodes: list[str], deleted: Sequence[str] = ()) -> None:
        """*nodes* as JSON text (:meth:`StateStore.cfg_text`, or :func:`compact` of a Dsc)."""
        if not self.closed and (nodes or deleted):
            self.transport.write(encode_batches(kind, nodes, deleted))

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

    def push_soon(self, delay: float = 0.0) -> None:
        if self._push_call is None and not self.closed:
            self._push_call = self.clock.callLater(delay, self._push_now)

    def _push_now(self) -> None:
        self._push_call = None
        if not self.closed:
            self.push()

    def push(self) -> None:
        raise NotImplementedError

    def _stop_timers(self) -> None:
        for name in ("_dead_call", "_hello_call", "_push_call", "_drain_call"):
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


def _nodes(body: dict[str, Any]) -> list[Node]:
    items = body.get("nodes")
    if not isinstance(items, list):
        raise ModelError("expected a list of nodes")
    return [model.from_json(item) for item in items]


# -- parent side ---------------------------------------------------------------------------------
class ChildLink(SyncProtocol):
    """On the parent: one connected child."""

    factory: SyncServerFactory

    def __init__(self) -> None:
        super().__init__()
        self.node_id: str | None = None
        self.dirty: set[str] = set()  # nodes below the child whose Cfg changed
        self.deleted: set[str] = set()

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
        elif message.kind is Kind.DSC_NODES:
            self.later(lambda: self.factory.apply_subtree_dsc(self, self.take()), _nodes(message.body))
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
        self.send_nodes(Kind.CFG_NODES, [state.store.cfg_text(n) for n in self.factory.descendants(node_id)])
        self.start_hello()

    def push(self) -> None:
        store = self.factory.state.store
        if self.node_id is not None and self.node_id in store.cfg:
            self.send(Kind.CFG, {"node": model.to_json(store.cfg[self.node_id])})
        if self.dirty or self.deleted:
            dirty, self.dirty = self.dirty, set()
            deleted, self.deleted = self.deleted, set()
            nodes = [store.cfg_text(n) for n in sorted(dirty) if n in store.cfg]
            self.send_nodes(Kind.CFG_NODES, nodes, sorted(deleted))

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
        kind = event.data.kind
        if kind not in _CFG_KINDS or not self.children:
            return
        node_id = event.url.partition(":")[0]
        link = self.children.get(node_id)
        if link is not None:
            if kind is ChangeKind.DELETE:
                self.children.pop(node_id, None)
                link.close()
            else:
                link.push_soon()
        # Every connected kraken above the node (a sub-master, its sub-master...) gets its Cfg.
        if kind is ChangeKind.DELETE:
            start = event.data.value.parent_id if isinstance(event.data.value, Node) else ""
        else:
            cfg = self.state.store.cfg.get(node_id)
            start = cfg.parent_id if cfg is not None else ""
        for above in self._ancestors(start):
            up = self.children.get(above)
            if up is not None:
                (up.deleted if kind is ChangeKind.DELETE else up.dirty).add(node_id)
                up.push_soon()

    def _ancestors(self, node_id: str) -> list[str]:
        """*node_id* and the nodes above it by Cfg ``parentId``, up to (not including) us."""
        out: list[str] = []
        cfg = self.state.store.cfg
        while node_id and node_id != self.state.self_id and len(out) < MAX_DEPTH:
            out.append(node_id)
            node = cfg.get(node_id)
            if node is None:
                break
            node_id = node.parent_id
        return out

    def route(self, node_id: str) -> ChildLink | None:
        """The connected link nearest to *node_id* (itself, or the nearest kraken above it)."""
        children = self.children
        if not children:
            return None
        cfg, me, depth = self.state.store.cfg, self.state.self_id, 0
        while node_id and node_id != me and depth < MAX_DEPTH:  # as _ancestors, stopping at the first
            link = children.get(node_id)
            if link is not None:
                return link
            node = cfg.get(node_id)
            if node is None:
                return None
            node_id, depth = node.parent_id, depth + 1
        return None

    def descendants(self, node_id: str) -> list[str]:
        """Every node below *node_id* by Cfg ``parentId`` (breadth first)."""
        below: dict[str, list[str]] = {}
        for n in self.state.store.cfg.values():
            if n.parent_id:
                below.setdefault(n.parent_id, []).append(n.id)
        if node_id not in below:
            return []
        out: list[str] = []
        queue = [node_id]
        seen = {node_id}
        while queue:
            for child in sorted(below.get(queue.pop(0), ())):
                if child not in seen:
                    seen.add(child)
                    out.append(child)
                    queue.append(child)
        return out

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
        relayed = [n for n in self.descendants(link.node_id) if self.route(n) is link]
        del self.children[link.node_id]
        engine, dsc = self.state.engine, self.state.store.dsc
        if link.node_id in dsc:
            engine.discover(SSE, link.node_id, "/RunState", "ERROR")
        for node_id in relayed:  # heard through the lost link only: nothing is known of them now
            known = node_id in dsc and dsc[node_id].run_state is not RunState.UNKNOWN
            if known and self.route(node_id) is None:
                engine.discover(SSE, node_id, "/RunState", "ERROR")
        log.warn("child {id} lost ({n} nodes below it)", id=link.node_id, n=len(relayed))

    def apply_dsc(self, node: Node) -> None:
        node.run_state = RunState.SYNC
        self.state.store.update_dsc(node)

    def apply_subtree_dsc(self, link: ChildLink, nodes: list[Node]) -> None:
        """Dsc of nodes below *link*'s child; only those it is the nearest link to."""
        skipped = 0
        for node in nodes:
            if node.id in self.state.store.dsc and self.route(node.id) is link:
                self.state.store.take_dsc(node)
            else:
                skipped += 1
        if skipped:
            log.debug("{n} Dsc from {id} not taken: not below it or heard nearer", n=skipped, id=link.node_id)


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
        elif message.kind is Kind.CFG_NODES and self.welcomed:
            deleted = message.body.get("deleted", [])
            items = [*_nodes(message.body), *(("delete", d) for d in deleted if isinstance(d, str))]
            self.later(lambda: self.owner.apply_cfg_nodes(self.take()), items)
        else:
            self.refuse(f"unexpected {message.kind.name}")

    def push(self) -> None:
        state = self.owner.state
        self.send(Kind.DSC, {"node": model.to_json(state.store.dsc[state.self_id])})
        dirty, self.owner.dirty = self.owner.dirty, set()
        dsc = state.store.dsc
        self.owner.last_report = len(dirty)
        self.send_nodes(Kind.DSC_NODES, [compact(model.to_json(dsc[n])) for n in sorted(dirty) if n in dsc])

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
        fallbacks: list[tuple[str, int]] | None = None,
        batch_delay: float = 0.1,
        wave_delay: float = 0.5,
    ) -> None:
        self.state = state
        self.clock = clock
        self.parents = [(host, port), *(fallbacks or [])]
        self.current = 0
        self.host = host
        self.port = port
        self.tls = tls
        self.dirty: set[str] = set()  # nodes below us whose Dsc changed
        self.batch_delay = batch_delay
        self.wave_delay = wave_delay  # while thousands of nodes change, wait longer: fewer reports
        self.last_report = 0  # nodes in the last DSC_NODES report
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
        self._next_parent()
        self._schedule()

    def _next_parent(self) -> None:
        """Try the next of our parent and fallback parents."""
        if len(self.parents) > 1:
            self.current = (self.current + 1) % len(self.parents)
            self.host, self.port = self.parents[self.current]

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
        self.dirty = {n for n in store.dsc if n != me}  # a new parent learns everything below us
        link.push()

    def apply_cfg(self, node: Node) -> None:
        if node.id != self.state.self_id:
            raise ModelError(f"CFG for {node.id}, we are {self.state.self_id}")
        self.state.store.update(node)

    def apply_cfg_nodes(self, items: list[Node | tuple[str, str]]) -> None:
        """Cfg of nodes below us from our parent (they are ours to drive: we are a sub-master),
        and ``("delete", id)`` for nodes removed there."""
        store, me = self.state.store, self.state.self_id
        for item in items:
            if isinstance(item, tuple):
                if item[1] != me and item[1] in store.cfg:
                    store.delete(item[1])
            elif item.id == me:
                continue
            elif item.id in store.cfg:
                store.take(item)
            else:
                store.create(item)

    def parent_lost(self, link: ParentLink) -> None:
        if self.link is not link and self.link is not None:
            return
        was_welcomed = link.welcomed
        self.link = None
        if was_welcomed:
            log.warn("lost our parent {h}:{p}; phoning home again", h=self.host, p=self.port)
            self.state.engine.discover(SSE, self.state.self_id, "/RunState", "ERROR")
        self._next_parent()
        self._schedule()

    def _changed(self, event: Event) -> None:
        if event.data.kind is not ChangeKind.UPDATE or self.link is None or not self.link.welcomed:
            return
        node_id = event.url.partition(":")[0]
        if node_id == self.state.self_id:
            self.link.push_soon()
        else:  # nodes below us: a short wait gathers a node's successive changes into one report
            self.dirty.add(node_id)
            self.link.push_soon(self.batch_delay if self.last_report < WAVE else self.wave_delay)
