"""Upload slots: how many pieces a host streams at once, in arrival order, with overdue holders."""

from __future__ import annotations

from twisted.internet.task import Clock

from kraken.p2p.uploads import UploadSlots


class Sender:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def slot_granted(self) -> None:
        self.log.append(self.name)


def senders(n: int) -> tuple[list[str], list[Sender]]:
    log: list[str] = []
    return log, [Sender(log, f"s{i}") for i in range(n)]


def test_no_limit_lets_everyone_stream() -> None:
    slots = UploadSlots(0, Clock())
    _, ss = senders(5)
    assert all(slots.acquire(s) for s in ss)
    assert not slots.holders and not slots.waiting


def test_waiting_senders_start_in_arrival_order_as_slots_free() -> None:
    slots = UploadSlots(2, Clock())
    log, (a, b, c, d) = senders(4)
    assert slots.acquire(a) and slots.acquire(b)
    assert not slots.acquire(c) and not slots.acquire(d)
    assert not slots.acquire(c), "asking again does not queue twice"
    assert list(slots.waiting) == [c, d]
    slots.release(a)
    assert log == ["s2"] and set(slots.holders) == {b, c}
    slots.release(d)  # gave up while waiting: nobody is started for it
    assert log == ["s2"] and not slots.waiting
    slots.release(b)
    slots.release(c)
    assert not slots.holders and log == ["s2"]


def test_a_newcomer_does_not_overtake_the_queue() -> None:
    clock = Clock()
    slots = UploadSlots(1, clock, overdue=2.0)
    log, (a, b, c) = senders(3)
    slots.acquire(a)
    slots.acquire(b)
    clock.advance(3)  # a's slot counts as free, but b is first in line (started on the next tick)
    assert not slots.acquire(c)
    slots.grant()
    assert log == ["s1"] and list(slots.waiting) == [c]


def test_an_overdue_piece_stops_holding_up_the_others() -> None:
    clock = Clock()
    slots = UploadSlots(1, clock, overdue=2.0)
    log, (slow, b) = senders(2)
    assert slots.acquire(slow)
    assert not slots.acquire(b)
    clock.advance(1.9)
    slots.grant()
    assert log == []
    clock.advance(0.2)
    slots.grant()
    assert log == ["s1"] and set(slots.holders) == {slow, b}
