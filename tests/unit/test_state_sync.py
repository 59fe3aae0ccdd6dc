"""Parent and child sync links on StringTransport with a Clock: identity checks, Cfg down,
Dsc up, dead timers, re-phone-home."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from kraken.core.jsontext import compact
from kraken.core.tls import PeerIdentity
from kraken.state.model import Busy, Node, RunState
from kraken.state.modules.freebusy import FreeBusy
from kraken.state.service import StateService
from kraken.state.sync import ParentLink, SyncClientService, SyncServerFactory
from kraken.state.sync_wire import Decoder, Kind, Message, encode, encode_batches

PARENT = "aaaaaaaa-0000-0000-0000-000000000001"
KID = "cccccccc-0000-0000-0000-000000000001"


def parent_rig() -> tuple[Clock, StateService, SyncServerFactory]:
    clock = Clock()
    state = StateService([], clock, self_id=PARENT)
    kid = Node(KID)
    kid.nodename, kid.parent_id, kid.run_state = "kr1", PARENT, RunState.SYNC
    state.store.create(kid)
    state.startService()
    return clock, state, SyncServerFactory(state, clock, hello=1.0, dead=4.0)


def connect_child(factory: SyncServerFactory, name: str = "kr1") -> tuple[Any, StringTransport]:
    link = factory.buildProtocol(None)
    transport = StringTransport()
    transport.peer = PeerIdentity(name, "state")  # what the TLS wrapper provides
    link.makeConnection(transport)
    return link, transport


def received(transport: StringTransport) -> list[Message]:
    out = list(Decoder().feed(transport.value()))
    transport.clear()
    return out


def test_parent_welcomes_pushes_cfg_and_marks_a_silent_child_dead() -> None:
    clock, state, factory = parent_rig()
    link, transport = connect_child(factory)
    link.dataReceived(encode(Kind.HELLO, {"id": KID}))
    (welcome,) = received(transport)
    assert (
        welcome.kind is Kind.WELCOME and welcome.body["cfg"]["id"] == KID and welcome.body["parent"] == PARENT
    )
    assert state.store.dsc[KID].run_state is RunState.SYNC

    state.store.set_value(KID, "/Busy", "BUSY")
    clock.advance(0)
    (cfg,) = received(transport)
    assert cfg.kind is Kind.CFG and cfg.body["node"]["busy"] == "BUSY"

    dsc = {"id": KID, "busy": "BUSY", "physState": "POWER_ON"}
    link.dataReceived(encode(Kind.DSC, {"node": dsc}))
    assert state.store.dsc[KID].busy is Busy.BUSY and state.store.dsc[KID].run_state is RunState.SYNC

    clock.advance(1.0)
    assert [m.kind for m in received(transport)] == [Kind.CFG]  # the hello timer
    clock.advance(2.5)
    assert state.store.dsc[KID].run_state is RunState.SYNC
    clock.advance(1.0)
    assert state.store.dsc[KID].run_state is RunState.ERROR
    assert transport.disconnecting and KID not in factory.children


def test_parent_refuses_impostors_strangers_and_garbage() -> None:
    cases: list[tuple[str, bytes, str]] = [
        ("kr2", encode(Kind.HELLO, {"id": KID}), "does not name node"),
        (
            "kr1",
            encode(Kind.HELLO, {"id": "dddddddd-0000-0000-0000-000000000001"}),
            "not in this kraken's Cfg",
        ),
        ("kr1", encode(Kind.HELLO, {"id": "nope"}), "not a UUID"),
        ("kr1", encode(Kind.DSC, {"node": {}}), "expected HELLO"),
        ("kr1", b"\x00\x00\x00\x02\x09{", "protocol error"),
    ]
    for name, data, message in cases:
        _, state, factory = parent_rig()
        link, transport = connect_child(factory, name)
        link.dataReceived(data)
        (error,) = received(transport)
        assert error.kind is Kind.ERROR and message in error.body["message"], (name, error)
        assert transport.disconnecting and state.store.dsc[KID].run_state is RunState.UNKNOWN


def test_a_malformed_frame_after_a_good_one_is_answered_after_it_is_handled() -> None:
    _, state, factory = parent_rig()
    link, transport = connect_child(factory)
    link.dataReceived(encode(Kind.HELLO, {"id": KID}) + b"\x00\x00\x00\x02\x09{")
    welcome, error = received(transport)
    assert welcome.kind is Kind.WELCOME and state.store.dsc[KID].run_state is RunState.SYNC
    assert error == Message(Kind.ERROR, {"message": "protocol error: unknown message kind 9"})
    assert transport.disconnecting
    link.dataReceived(encode(Kind.DSC, {"node": {"id": KID, "busy": "BUSY"}}))
    assert transport.value() == b"" and state.store.dsc[KID].busy is Busy.FREE


def test_a_dsc_for_another_node_is_refused() -> None:
    _, state, factory = parent_rig()
    link, transport = connect_child(factory)
    link.dataReceived(encode(Kind.HELLO, {"id": KID}))
    received(transport)
    link.dataReceived(encode(Kind.DSC, {"node": {"id": PARENT, "busy": "BUSY"}}))
    (error,) = received(transport)
    assert error.kind is Kind.ERROR and transport.disconnecting
    assert state.store.dsc[PARENT].busy is Busy.FREE


def child_rig() -> tuple[Clock, StateService, SyncClientService, ParentLink, StringTransport]:
    clock = Clock()
    state = StateService([FreeBusy()], clock, self_id=KID, full_state=False)
    state.startService()
    service = SyncClientService(state, clock, "127.0.0.1", 1, tls=None, hello=1.0, dead=4.0)  # type: ignore[arg-type]
    service.running = True
    link = ParentLink(service)
    transport = StringTransport()
    link.makeConnection(transport)
    service.link = link
    return clock, state, service, link, transport


def test_child_takes_its_cfg_acts_reports_and_phones_home_again() -> None:
    clock, state, service, link, transport = child_rig()
    (hello,) = received(transport)
    assert hello == Message(Kind.HELLO, {"id": KID})
    assert state.engine.frozen
    cfg = {"id": KID, "nodename": "kr1", "parentId": PARENT, "runState": "SYNC", "busy": "BUSY"}
    link.dataReceived(
        encode(Kind.WELCOME, {"parent": PARENT, "cfg": cfg, "dsc": {"id": KID}, "hello": 1, "dead": 4})
    )
    assert not state.engine.frozen
    assert state.store.cfg[KID].parent_id == PARENT
    assert state.store.dsc[KID].busy is Busy.BUSY  # freebusy fenced the node itself
    clock.advance(0)
    reports = [m for m in received(transport) if m.kind is Kind.DSC]
    assert (
        reports
        and reports[-1].body["node"]["busy"] == "BUSY"
        and reports[-1].body["node"]["runState"] == "SYNC"
    )

    link.dataReceived(encode(Kind.CFG, {"node": {**cfg, "arch": "arm64"}}))
    assert state.store.cfg[KID].arch == "arm64"

    clock.advance(4.5)  # the parent went silent
    assert state.store.dsc[KID].run_state is RunState.ERROR
    assert transport.disconnecting and service.link is None
    assert service._retry is not None and service._retry.getTime() == clock.seconds() + 1.0


LEAF = "cccccccc-0000-0000-0000-00000000000a"
OTHER = "cccccccc-0000-0000-0000-00000000000b"


def test_a_sub_master_gets_the_cfg_below_it_and_reports_only_for_its_own_nodes() -> None:
    clock, state, factory = parent_rig()
    for node_id, parent in ((LEAF, KID), (OTHER, PARENT)):
        n = Node(node_id)
        n.parent_id = parent
        state.store.create(n)
    link, transport = connect_child(factory)
    link.dataReceived(encode(Kind.HELLO, {"id": KID}))
    welcome, below = received(transport)
    assert welcome.kind is Kind.WELCOME
    assert below.kind is Kind.CFG_NODES and [n["id"] for n in below.body["nodes"]] == [LEAF]

    state.store.set_value(LEAF, "/Busy", "BUSY")  # Cfg of a node below the sub-master
    state.store.set_value(OTHER, "/Busy", "BUSY")  # not below it: not sent
    clock.advance(0)
    messages = received(transport)
    assert [m.kind for m in messages] == [Kind.CFG, Kind.CFG_NODES]
    assert [n["busy"] for n in messages[1].body["nodes"]] == ["BUSY"]
    state.store.delete(LEAF)
    clock.advance(0)
    assert received(transport)[-1].body == {"nodes": [], "deleted": [LEAF]}

    leaf = Node(LEAF)
    leaf.parent_id = KID
    state.store.create(leaf)
    dsc = [{"id": LEAF, "busy": "BUSY", "runState": "SYNC"}, {"id": OTHER, "busy": "BUSY"}]
    link.dataReceived(encode(Kind.DSC_NODES, {"nodes": dsc}))
    assert transport.producerState == "paused"  # applied in the next turns; no reading meanwhile
    clock.advance(0)
    assert transport.producerState == "producing"
    assert state.store.dsc[LEAF].busy is Busy.BUSY
    assert state.store.dsc[OTHER].busy is Busy.FREE  # a sub-master cannot report on others' nodes
    assert factory.route(LEAF) is link and factory.descendants(KID) == [LEAF]

    link.connectionLost()  # the sub-master dies: what it relayed is unknown now
    assert state.store.dsc[LEAF].run_state is RunState.ERROR
    assert state.store.dsc[KID].run_state is RunState.ERROR


def test_a_child_tries_its_fallback_parents_in_turn() -> None:
    clock = Clock()
    state = StateService([FreeBusy()], clock, self_id=KID, full_state=False)
    tls: Any = None  # never used: no connection is made
    svc = SyncClientService(state, clock, "10.0.0.1", 1, tls, hello=1.0, fallbacks=[("10.0.0.2", 2)])
    tried = []
    for _ in range(3):
        tried.append((svc.host, svc.port))
        svc._failed(Failure(ConnectionRefusedError()))
    assert tried == [("10.0.0.1", 1), ("10.0.0.2", 2), ("10.0.0.1", 1)]


class CountingChunks(SyncClientService):
    chunks: list[int]

    def apply_cfg_nodes(self, items: list[Any]) -> None:
        self.chunks.append(len(items))
        super().apply_cfg_nodes(items)


def test_a_big_batch_is_applied_a_chunk_per_turn() -> None:
    clock = Clock()
    state = StateService([FreeBusy()], clock, self_id=KID, full_state=False)
    tls: Any = None
    svc = CountingChunks(state, clock, "10.0.0.1", 1, tls)
    svc.chunks = []
    link = ParentLink(svc)
    transport = StringTransport()
    link.makeConnection(transport)
    link.dataReceived(encode(Kind.WELCOME, {"parent": PARENT, "cfg": {"id": KID}, "dsc": {"id": KID}}))
    nodes = [{"id": f"dddddddd-0000-0000-0000-{i:012d}", "parentId": KID} for i in range(1200)]
    texts = [compact(n) for n in nodes]
    link.dataReceived(encode_batches(Kind.CFG_NODES, texts, ["dddddddd-0000-0000-0000-000000000000"]))
    assert len(state.store.cfg) == 1 and transport.producerState == "paused"
    clock.advance(0)  # a Clock runs the follow-up turns at once; a reactor, one per iteration
    assert svc.chunks == [500, 500, 201]  # 1,200 nodes and one deletion
    assert len(state.store.cfg) == 1 + 1200 - 1  # the deletion comes after the batch it rode with
    assert transport.producerState == "producing"


def test_a_sub_master_gathers_its_reports_longer_while_a_wave_of_nodes_changes() -> None:
    clock = Clock()
    state = StateService([FreeBusy()], clock, self_id=KID, full_state=False)
    tls: Any = None
    svc = SyncClientService(state, clock, "10.0.0.1", 1, tls, batch_delay=0.1, wave_delay=0.5)
    link = ParentLink(svc)
    transport = StringTransport()
    link.makeConnection(transport)
    svc.link = link
    link.dataReceived(encode(Kind.WELCOME, {"parent": PARENT, "cfg": {"id": KID}, "dsc": {"id": KID}}))
    ids = [f"dddddddd-0000-0000-0000-{i:012d}" for i in range(1200)]
    link.dataReceived(encode_batches(Kind.CFG_NODES, [compact({"id": i, "parentId": KID}) for i in ids]))
    clock.advance(0)
    received(transport)

    def reported() -> list[str]:
        return [n["id"] for m in received(transport) if m.kind is Kind.DSC_NODES for n in m.body["nodes"]]

    for node_id in ids:  # a wave: every node below changes within one window
        state.store.set_value(node_id, "/Arch", "arm64", dsc=True)
    clock.advance(0.1)
    assert len(reported()) == 1200
    state.store.set_value(ids[0], "/Arch", "x86_64", dsc=True)
    clock.advance(0.1)
    assert reported() == []  # still in a wave: gathered for longer
    clock.advance(0.4)
    assert reported() == [ids[0]]
    state.store.set_value(ids[1], "/Arch", "x86_64", dsc=True)
    clock.advance(0.1)
    assert reported() == [ids[1]]  # the wave is over: a lone change goes up within 0.1 s
