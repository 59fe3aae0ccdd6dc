"""WebSocket delivery logic: one frame per reactor turn, pause/resume, bounded pending data."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock

from kraken.pubsub.router import Router
from kraken.pubsub.websocket import PushSubscriber


class Frames:
    """Stands in for the autobahn protocol: records what would be sent."""

    def __init__(self, router: Router, clock: Clock) -> None:
        self.factory = SimpleNamespace(router=router, clock=clock)
        self.sent: list[tuple[bytes, bool]] = []

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        self.sent.append((payload, isBinary))


def setup(max_bytes: int = 1 << 20) -> tuple[Clock, Router, Any, PushSubscriber]:
    clock = Clock()
    router = Router(clock)
    frames = Frames(router, clock)
    sub = PushSubscriber(router.new_id(), "ws", 0.0, frames, max_bytes)  # type: ignore[arg-type]
    router.connect(sub)
    router.subscribe(sub, [b"a", b"b"])
    return clock, router, frames, sub


def test_one_frame_per_turn() -> None:
    clock, router, frames, _ = setup()
    router.publish(None, [([b"a"], b"1"), ([b"b"], b"2")])
    router.publish(None, [([b"a", b"b"], b"3")])
    router.flush()
    assert frames.sent == []
    clock.advance(0)
    # b is in shard 2, a in shard 3: the two-topic message comes as b's record, then a's
    block = b"MESSAGE a 1\r\n1\r\nMESSAGE b 1\r\n2\r\nMESSAGE b 1\r\n3\r\nMESSAGE a 1\r\n3\r\n"
    assert frames.sent == [(block, True)]


def test_paused_client_gets_everything_on_resume_within_bounds() -> None:
    clock, router, frames, sub = setup(max_bytes=60)
    sub.pauseProducing()
    for i in range(5):
        router.publish(None, [([b"a"], b"m%d" % i)])
        router.flush()
    clock.advance(0)
    assert frames.sent == []
    assert sub.dropped == 2 and sub.depth() == 3
    sub.resumeProducing()
    assert frames.sent == [(b"MESSAGE a 2\r\nm2\r\nMESSAGE a 2\r\nm3\r\nMESSAGE a 2\r\nm4\r\n", True)]
    sub.cancel()
    router.disconnect(sub)
    assert router.subscribers == {}
