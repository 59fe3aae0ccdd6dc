"""Deadlines: many timeouts behind one reactor timer, driven by a fake clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from kraken.state.deadlines import Deadlines


def test_deadlines_run_in_order_at_their_time_and_cancelled_ones_never() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    ran: list[str] = []
    deadlines.call_later(5.0, ran.append, "b")
    late = deadlines.call_later(7.0, ran.append, "never")
    deadlines.call_later(2.0, ran.append, "a")
    deadlines.call_later(5.0, ran.append, "c")  # same time as "b": in the order armed
    assert len(clock.getDelayedCalls()) == 1  # one reactor timer, for the earliest
    clock.advance(1.999)
    assert ran == []
    clock.advance(0.001)
    assert ran == ["a"]
    late.cancel()
    assert not late.active()
    clock.advance(3.0)
    assert ran == ["a", "b", "c"]
    clock.advance(10.0)
    assert ran == ["a", "b", "c"]
    assert clock.getDelayedCalls() == []  # nothing left armed once only cancelled ones remain


def test_an_earlier_deadline_moves_the_timer_and_one_armed_while_running_runs_too() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    ran: list[str] = []
    deadlines.call_later(10.0, ran.append, "slow")
    clock.advance(1.0)
    first = deadlines.call_later(0.5, lambda: deadlines.call_later(0.0, ran.append, "chained"))
    clock.advance(0.5)
    assert first.called and not first.active()
    clock.advance(0.0)
    assert ran == ["chained"]
    clock.advance(8.5)
    assert ran == ["chained", "slow"]


def test_a_raising_deadline_does_not_stop_the_others() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    ran: list[int] = []

    def boom() -> None:
        raise RuntimeError("boom")

    deadlines.call_later(1.0, boom)
    deadlines.call_later(1.0, ran.append, 1)
    deadlines.call_later(2.0, ran.append, 2)
    clock.advance(1.0)
    assert ran == [1]
    clock.advance(1.0)
    assert ran == [1, 2]


def test_cancelled_deadlines_do_not_pile_up() -> None:
    clock = Clock()
    deadlines = Deadlines(clock)
    for _ in range(10_000):
        deadlines.call_later(100.0, lambda: None).cancel()
    keep = deadlines.call_later(100.0, lambda: None)
    assert len(deadlines) == 1
    assert len(deadlines._heap) < 200  # swept as it grows, not only when due
    deadlines.cancel_all()
    assert not keep.active() and clock.getDelayedCalls() == []
