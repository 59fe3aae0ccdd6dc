"""A 3-node cluster in memory: ownership by rendezvous hash, one delivery per node, a dead
node's shards moving to the next owner while the others' clients keep receiving."""

from __future__ import annotations

from kraken.pubsub import wire
from kraken.pubsub.phash2 import shard_of
from kraken.pubsub.testing import Conn, Mesh


def records(conn: Conn) -> list[wire.Record]:
    replies = wire.ReplyParser().feed(conn.send(b"get messages\r\n"))
    assert len(replies) == 1
    return replies[0].records()


def publish(conn: Conn, *records: tuple[list[bytes], bytes]) -> None:
    assert conn.send(wire.set_command(b"publish", wire.publish_body(records))) == b"STORED\r\n"


def topic_owned_by(mesh: Mesh, node: int) -> bytes:
    mesh.pump()  # the first health checks
    name = mesh.clusters[0].members[node]
    for i in range(1000):
        topic = b"topic%d" % i
        if mesh.clusters[0].owner(shard_of(topic, 4)) == name:
            return topic
    raise AssertionError("no topic for that node")


def test_every_node_agrees_on_the_owners_and_all_shards_are_owned() -> None:
    mesh = Mesh(3)
    mesh.pump()
    owned = [c.owned_shards() for c in mesh.clusters]
    assert owned[0] == owned[1] == owned[2]
    assert sorted(s for shards in owned[0].values() for s in shards) == [0, 1, 2, 3]


def test_a_publish_is_forwarded_to_the_owner_which_shares_it_once() -> None:
    mesh = Mesh(3)
    owner = 2
    topic = topic_owned_by(mesh, owner)
    subs = [mesh.connect_to(i) for i in range(3)]
    for s in subs:
        s.send(wire.set_command(b"subscribe", topic))
    # a peer's subscription is not passed on: each node holds the topic once at each peer
    assert [len(r.held_topics) for r in mesh.routers] == [1, 1, 1]
    assert [len(r.subscribers[topic]) for r in mesh.routers] == [3, 3, 3]
    publisher = mesh.connect_to(0)
    publish(publisher, ([topic], b"hello"))
    for s in subs:
        assert records(s) == [([topic], b"hello")]
    assert mesh.clusters[0].forwarded == 1 and mesh.clusters[1].forwarded == 0


def test_kill_a_node_its_shards_move_and_the_others_keep_receiving() -> None:
    mesh = Mesh(3)
    dead = 1
    topic = topic_owned_by(mesh, dead)
    a, b = mesh.connect_to(0), mesh.connect_to(2)
    doomed = mesh.connect_to(dead)
    for s in (a, b, doomed):
        s.send(wire.set_command(b"subscribe", topic))
    publish(a, ([topic], b"before"))
    assert records(b) == [([topic], b"before")] and records(doomed) == [([topic], b"before")]
    mesh.kill(dead)
    name = mesh.clusters[dead].members[dead]
    new_owner = mesh.clusters[0].owner(shard_of(topic, 4))
    assert new_owner != name and mesh.clusters[2].owner(shard_of(topic, 4)) == new_owner
    for i in range(5):
        publish(a, ([topic], b"after%d" % i))
    publish(b, ([topic], b"from b"))
    assert records(b) == [([topic], b"after%d" % i) for i in range(5)]
    assert records(a) == [([topic], b"from b")]


def test_a_health_check_timeout_makes_a_silent_peer_lose_its_shards() -> None:
    mesh = Mesh(3)
    mesh.pump()
    cluster = mesh.clusters[0]
    silent = cluster.members[2]
    assert cluster.healthy(silent)
    mesh.clock.advance(cluster.health_timeout + 1)
    assert not cluster.healthy(silent)
    assert silent not in {cluster.owner(s) for s in range(4)}
    mesh.pump()  # pings answered
    assert cluster.healthy(silent)


def test_patterns_across_the_cluster_arrive_once() -> None:
    mesh = Mesh(3)
    sub = mesh.connect_to(0)
    sub.send(wire.set_command(b"psubscribe", b"t.>"))
    publishers = [mesh.connect_to(i) for i in range(3)]
    for i, p in enumerate(publishers):
        publish(p, ([b"t.%d" % i, b"t.x%d" % i], b"m%d" % i))
    got = records(sub)
    # each message once per shard its topics fall in, never twice for one shard
    per_message: dict[bytes, list[bytes]] = {}
    for topics, payload in got:
        per_message.setdefault(payload, []).extend(topics)
    assert {m: sorted(t) for m, t in per_message.items()} == {
        b"m%d" % i: sorted([b"t.%d" % i, b"t.x%d" % i]) for i in range(3)
    }
