"""Cluster health on a Clock: thresholds, probe timeouts, the passive filter, the ring around dead owners."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from kraken.core.digest import Digest
from kraken.core.hashring import Ring
from kraken.core.health import ActiveHealthCheck, HealthTable, PassiveFilter, healthy_first
from kraken.origin.membership import moved_copies
from kraken.origin.replication import OriginPlacement

CLUSTER = ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1"]


def test_fails_in_a_row_make_a_member_unhealthy_and_passes_bring_it_back() -> None:
    table = HealthTable(fails=3, passes=2)
    flips: list[tuple[str, bool]] = []
    table.on_change.append(lambda m, h: flips.append((m, h)))
    assert table.healthy("a") and not table.checked_healthy("a")  # never probed: routed to, not ready
    for ok in (False, False, True, False, False):  # a good probe resets the count
        table.record("a", ok)
    assert table.healthy("a") and table.checked_healthy("a")
    table.record("a", False, "refused")
    assert not table.healthy("a") and table.unhealthy() == ["a"] and flips == [("a", False)]
    table.record("a", True)
    assert not table.healthy("a")
    table.record("a", True)
    assert table.healthy("a") and flips == [("a", False), ("a", True)]


def test_active_checks_probe_every_interval_and_a_hung_probe_fails_at_its_timeout() -> None:
    clock = Clock()
    answers: dict[str, Any] = {"up": True, "down": False, "hung": None}
    probes: list[str] = []

    def probe(member: str) -> Deferred[Any]:
        probes.append(member)
        answer = answers[member]
        if answer is None:
            return Deferred()
        return succeed(None) if answer else fail(ConnectionRefusedError(member))

    table = HealthTable(fails=2, passes=1)
    check = ActiveHealthCheck(clock, lambda: list(answers), probe, table, interval=1.0, timeout=0.5)
    check.startService()
    clock.advance(0)
    assert sorted(probes) == ["down", "hung", "up"]
    clock.advance(0.5)  # the hung probe times out: its first failure
    clock.advance(0.5)
    assert sorted(probes) == ["down", "down", "hung", "hung", "up", "up"]
    clock.advance(0.5)
    assert table.unhealthy() == ["down", "hung"] and table.healthy("up")
    answers["down"] = True
    clock.advance(0.5)
    assert table.unhealthy() == ["hung"]
    check.stopService()
    assert not [c for c in clock.getDelayedCalls() if c.active() and c.getTime() > clock.seconds() + 0.5]


def test_the_passive_filter_skips_a_failing_member_for_its_timeout() -> None:
    clock = Clock()
    health = PassiveFilter(clock, fails=2, fail_timeout=10.0)
    health.failed("a")
    assert health.healthy("a")
    clock.advance(1)
    health.failed("a")
    assert not health.healthy("a")
    assert healthy_first(["a", "b", "c"], health.healthy) == ["b", "c", "a"]
    clock.advance(10.5)
    assert health.healthy("a")
    health.failed("b")
    clock.advance(11)
    health.failed("b")  # two failures farther apart than the timeout: still healthy
    assert health.healthy("b")
    health.failed("b")
    health.succeeded("b")
    assert health.healthy("b")


def test_reads_and_uploads_go_to_the_healthy_owners_else_the_next_healthy_member() -> None:
    d = Digest.of_bytes(b"routed")
    ranked = Ring(CLUSTER, 2).ranked(d.hex)
    me = ranked[3]
    placement = OriginPlacement(CLUSTER, 2, "unused", {}, b"", self_address=me)
    down: set[str] = set()
    placement.healthy = lambda a: a not in down
    assert placement.locations(d) == ranked[:2]
    down.add(ranked[0])
    assert placement.locations(d) == [ranked[1]]
    down.add(ranked[1])
    assert placement.locations(d) == [ranked[2]]  # the next healthy one on the rendezvous order
    down.add(ranked[2])
    assert placement.locations(d) == [me]  # this origin is healthy to itself
    assert placement.other_owners(d) == ranked[:2]  # copies still go to the real owners (queued)
    assert placement.stand_ins(d) == []  # no other healthy member to stand in (this one is last)
    down.discard(ranked[2])
    assert placement.stand_ins(d) == [ranked[2]]  # two owners down, one healthy member left
    down.clear()
    assert placement.stand_ins(d) == []
    assert placement.others() == [a for a in CLUSTER if a != me]


def test_a_membership_change_copies_each_moved_blob_once_from_its_first_remaining_owner() -> None:
    digests = [Digest.of_bytes(str(i).encode()) for i in range(200)]
    old, new = Ring(CLUSTER[:3], 2), Ring(CLUSTER, 2)
    plans = {me: moved_copies(old, new, me, digests, lambda a: True) for me in CLUSTER[:3]}
    for d in digests:
        gained = [o for o in new.locations(d.hex) if o not in old.locations(d.hex)]
        senders = [me for me, plan in plans.items() if d in plan]
        if gained:
            assert senders == [old.locations(d.hex)[0]] and plans[senders[0]][d] == gained
        else:
            assert senders == []
    moved = sum(1 for d in digests if d in plans[old.locations(d.hex)[0]])
    assert 0.2 * len(digests) < moved < 0.8 * len(digests)  # a new member takes about its share
    # the first owner is removed: the second one sends
    shrunk = Ring(CLUSTER[1:3], 2)
    for d in digests:
        before = old.locations(d.hex)
        if before[0] == CLUSTER[0] and before[1] in shrunk.nodes:
            plan = moved_copies(old, shrunk, before[1], [d], lambda a: True)
            assert plan == {d: [o for o in shrunk.locations(d.hex) if o not in before]}
