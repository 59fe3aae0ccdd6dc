from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kraken.core.turns import in_turns


def test_the_first_slice_is_done_at_once_and_each_next_in_a_later_turn() -> None:
    clock = Clock()
    seen: list[list[int]] = []
    done = in_turns(clock, list(range(7)), lambda chunk: seen.append(list(chunk)), 3)
    assert seen == [[0, 1, 2]] and not done.called
    clock.advance(0)  # a Clock runs the follow-up turns at once; a reactor, one per iteration
    assert seen == [[0, 1, 2], [3, 4, 5], [6]] and done.called


def test_no_more_than_one_slice_is_a_plain_call() -> None:
    seen: list[Sequence[int]] = []
    assert in_turns(Clock(), [1, 2], seen.append, 3).called and seen == [[1, 2]]
    assert in_turns(Clock(), [], seen.append, 3).called


def test_the_first_exception_fails_it_and_stops_the_rest() -> None:
    clock = Clock()
    seen: list[Sequence[int]] = []

    def work(chunk: Sequence[int]) -> None:
        if 3 in chunk:
            raise ValueError("bad item")
        seen.append(chunk)

    done = in_turns(clock, list(range(9)), work, 3)
    clock.advance(0)
    assert seen == [[0, 1, 2]]
    failure = SynchronousTestCase().failureResultOf(done, ValueError)
    assert str(failure.value) == "bad item"
