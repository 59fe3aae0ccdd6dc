"""200 misbehaving clients around one well-behaved subscriber: it still gets every message."""

from __future__ import annotations

import random

from kraken.pubsub import wire
from kraken.pubsub.testing import Harness

PIECES = [
    b"get messages\r\n", b"get messages\n", b"get foo\r\n", b"set subscribe 0 0 1\r\nt\r\n",
    b"set subscribe 0 0 3\r\nt x\r\n", b"set unsubscribe 0 0 1\r\nt\r\n", b"set publish 0 0 5\r\nhello\r\n",
    wire.set_command(b"publish", wire.record([b"x", b"y"], b"noise")), b"set register 0 0 0\r\n\r\n",
    b"set retro_subscribe 0 0 4\r\n0\r\nt\r\n", b"set subscribe 0 0 99\r\n", b"quit\r\n", b"stats\r\n",
    b"\xff\x00\r\n", b"set publish 0 0 -1\r\n", b"GET messages\r\n", b"set subscribe 0 0 1 noreply\r\n",
]


def test_chaos_clients_do_not_disturb_a_good_one() -> None:
    rng = random.Random(1234)
    h = Harness(max_clients=300, max_queue_messages=50)
    good, pub = h.connect(), h.connect()
    assert good.send(b"set subscribe 0 0 1\r\nt\r\n") == b"STORED\r\n"
    chaos = [h.connect() for _ in range(200)]
    sent: list[bytes] = []
    got: list[bytes] = []
    for step in range(400):
        for i in rng.sample(range(len(chaos)), 20):
            if chaos[i].closed:
                chaos[i] = h.connect()
            conn = chaos[i]
            data = b"".join(rng.choice(PIECES) for _ in range(rng.randint(1, 4)))
            if rng.random() < 0.2:
                data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 30)))
            conn.send(data, chunk=rng.randint(1, 16))
        payload = b"msg %d \r\n" % step
        sent.append(payload)
        assert pub.send(wire.set_command(b"publish", wire.record([b"t"], payload))) == b"STORED\r\n"
        if step % 7 == 0:
            replies = wire.ReplyParser().feed(good.send(b"get messages\r\n"))
            got += [p for _, p in replies[0].records()]
    replies = wire.ReplyParser().feed(good.send(b"get messages\r\n"))
    got += [p for _, p in replies[0].records()]
    assert got == sent
    assert not good.closed and not pub.closed
    assert h.factory.malformed > 1000
    for conn in chaos:
        conn.close()
    assert set(h.router.clients) == {good.protocol.session.client.id, pub.protocol.session.client.id}
    assert set(h.router.subscribers) == {b"t"}
