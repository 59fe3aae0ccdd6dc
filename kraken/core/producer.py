"""Back-pressure for protocols that queue what they send and write it out in ``flush()``."""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


class Flushable(Protocol):
    def flush(self) -> None: ...


@implementer(IPushProducer)
class FlushWhenResumed:
    """Registered as the transport's producer: ``paused`` while the transport's buffer is full
    (the owner holds its writes), and a flush of the owner's queue when it empties again."""

    def __init__(self, owner: Flushable) -> None:
        self.owner = owner
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.owner.flush()

    def stopProducing(self) -> None:
        self.paused = True
