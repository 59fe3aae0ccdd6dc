"""Subscription limits and connection admission, in memory (byte transcripts, Clock)."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from kraken.pubsub import wire
from kraken.pubsub.admission import SILENT_GRACE, Admission, Refused
from kraken.pubsub.router import OverLimit, Router, SubscriptionLimits
from kraken.pubsub.subscriber import QueueSubscriber
from kraken.pubsub.testing import Conn, Harness


def client_of(conn: Conn) -> QueueSubscriber:
    session = conn.protocol.session
    assert session is not None
    return session.client


def limited_router(**limits: int) -> tuple[Router, QueueSubscriber, QueueSubscriber]:
    router = Router(Clock(), limits=SubscriptionLimits(**limits))
    a, b = (QueueSubscriber(router.new_id(), name, 0.0, 100, 10_000) for name in "ab")
    router.connect(a)
    router.connect(b)
    return router, a, b


def test_a_subscribe_over_a_limit_changes_nothing() -> None:
    router, a, b = limited_router(per_command=3, per_connection=4, server=6)
    with pytest.raises(OverLimit) as e:
        router.subscribe(a, [b"1", b"2", b"3", b"4"])
    assert e.value.limit == "per_command"
    router.subscribe(a, [b"1", b"2", b"3"])
    router.register(a)
    with pytest.raises(OverLimit) as e:
        router.subscribe(a, [b"1", b"4", b"5"])
    assert e.value.limit == "per_connection"
    assert set(a.topics) == {b"1", b"2", b"3"} and a.horizon is not None  # register still pending
    router.subscribe(a, [b"1", b"1", b"4"])  # repeats and held topics count once / not at all
    router.subscribe(b, [b"x", b"y"])
    with pytest.raises(OverLimit) as e:
        router.retro_subscribe(b, 0.0, [b"z"])
    assert e.value.limit == "server"
    assert router.subscription_count() == 6 and b"z" not in router.subscribers
    router.unsubscribe(a, [b"1"])
    router.retro_subscribe(b, 0.0, [b"z"])
    router.disconnect(a)
    assert router.subscription_count() == 3
    assert router.stats.refused_subscribes == {"per_command": 1, "per_connection": 1, "server": 1}


def test_subscribe_churn_keeps_a_bounded_history() -> None:
    router, a, _ = limited_router(per_connection=2000)
    for round_ in range(5):
        names = [b"%d-%d" % (round_, n) for n in range(2000)]
        router.subscribe(a, names[:1000])
        router.subscribe(a, names[1000:])
        router.unsubscribe(a, names)
    assert len(a.ended) <= 2000


def test_over_limit_replies_server_error_and_the_connection_stays() -> None:
    h = Harness()
    h.router.limits = SubscriptionLimits(per_command=2, per_connection=3, server=100)
    a = h.connect()
    assert a.send(b"set subscribe 0 0 5\r\na b c\r\n") == (
        b"SERVER_ERROR subscribe names 3 topics, over the limit of 2 per command\r\n"
    )
    assert a.send(b"set subscribe 0 0 3\r\na b\r\nset subscribe 0 0 3\r\nc d\r\n") == (
        b"STORED\r\nSERVER_ERROR subscribe would give this connection 4 subscriptions, "
        b"over the limit of 3\r\n"
    )
    assert a.send(wire.set_command(b"retro_subscribe", b"0\r\nx y z   ")) == (
        b"SERVER_ERROR subscribe names 3 topics, over the limit of 2 per command\r\n"
    )
    assert a.send(wire.set_command(b"retro_subscribe", b"0\r\nc   ")) == b"NOT_FOUND\r\n"
    assert a.send(b"get messages\r\n") == b"END\r\n"
    assert not a.closed and sorted(client_of(a).topics) == [b"a", b"b", b"c"]


def test_admission_makes_room_with_silent_then_idle_connections() -> None:
    adm: Admission[str] = Admission(max_clients=3, max_per_address=2, evict_idle_after=60)
    assert adm.admit("talker", "10.0.0.1", 0.0) is None
    assert adm.admit("quiet", "10.0.0.2", 0.0) is None
    adm.commanded("talker", 1.0)
    adm.commanded("quiet", 1.0)
    assert adm.admit("silent", "10.0.0.2", 1.0) is None
    with pytest.raises(Refused) as e:
        adm.admit("third", "10.0.0.2", 1.0)
    assert e.value.per_address
    with pytest.raises(Refused) as e:  # full, and the silent one is still within its grace
        adm.admit("new", "10.0.0.3", 1.0)
    assert not e.value.per_address
    assert adm.admit("new", "10.0.0.3", 1.0 + SILENT_GRACE) == "silent"
    adm.commanded("new", 4.0)
    adm.commanded("talker", 50.0)
    with pytest.raises(Refused):
        adm.admit("newer", "10.0.0.4", 60.0)
    assert adm.admit("newer", "10.0.0.4", 61.0) == "quiet"  # last command at 1.0
    adm.leave("quiet")  # its connectionLost after the eviction: nothing to undo
    assert len(adm) == 3 and adm.per_address == {"10.0.0.1": 1, "10.0.0.3": 1, "10.0.0.4": 1}


def test_first_command_timeout_and_eviction_on_the_protocol() -> None:
    h = Harness(max_clients=2, first_command_timeout=30, idle_timeout=3600, evict_idle_after=60)
    talker, silent = h.connect(), h.connect()
    assert talker.send(b"get messages\r\n") == b"END\r\n"
    assert silent.send(b"get mess") == b""
    h.clock.advance(29)
    assert silent.send(b"ag") == b""  # partial input does not extend the first-command timeout
    h.clock.advance(1)
    assert silent.closed and not talker.closed
    assert h.factory.idle_closed == 1
    other = h.connect()
    h.clock.advance(SILENT_GRACE)
    newcomer = h.connect()  # full: the silent newcomer before it makes room
    assert other.closed and newcomer.send(b"get messages\r\n") == b"END\r\n"
    assert h.factory.evicted == 1
    assert h.router.clients.keys() == {client_of(talker).id, client_of(newcomer).id}
