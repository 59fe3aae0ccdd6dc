"""Long work split across reactor turns, so one big request never holds the reactor for seconds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

T = TypeVar("T")


def in_turns(
    clock: IReactorTime, items: Sequence[T], work: Callable[[Sequence[T]], None], per_turn: int
) -> Deferred[None]:
    """Call *work* on *items* ``per_turn`` at a time: the first slice at once, each next one in a
    later reactor turn (``callLater(0)``). Fires when the last slice is done; fails with the first
    exception *work* raises (the slices after it are not done). With no more than ``per_turn``
    items everything is done before this returns, as a plain call would."""
    done: Deferred[None] = Deferred()

    def turn(start: int) -> None:
        try:
            work(items[start : start + per_turn])
        except Exception as e:
            done.errback(e)
            return
        if start + per_turn < len(items):
            clock.callLater(0, turn, start + per_turn)
        else:
            done.callback(None)

    turn(0)
    return done
