"""The origin's placement in its cluster and the copies it sends to the other owners."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from kraken.core.digest import Digest
from kraken.core.hashring import Ring
from kraken.core.journal import Journal, read_rows
from kraken.origin.replication import OriginPlacement, Replicator

CLUSTER = ["10.0.0.1:15002", "10.0.0.2:15002", "10.0.0.3:15002"]
DIGEST = Digest.of_bytes(b"replicated")


class Sender:
    def __init__(self, sent: list[tuple[str, Digest, str]], address: str, broken: set[str]) -> None:
        self.sent, self.address, self.broken = sent, address, broken

    def transfer(self, digest: Digest, path: str) -> Deferred[Any]:
        if self.address in self.broken:
            return fail(ConnectionRefusedError(self.address))
        self.sent.append((self.address, digest, path))
        return succeed(None)


def test_self_address_is_the_configured_one_or_host_and_bound_port() -> None:
    ports: dict[str, int] = {}
    placement = OriginPlacement([], 2, "10.0.0.9", ports, b"\x01" * 20)
    assert placement.self_address() == "10.0.0.9:0"
    ports["http"] = 15002
    assert placement.self_address() == "10.0.0.9:15002"
    assert placement.ring().locations(DIGEST.hex) == ["10.0.0.9:15002"]
    assert OriginPlacement([], 2, "h", ports, b"", self_address="o:1").self_address() == "o:1"


def test_peer_context_names_the_seeder() -> None:
    placement = OriginPlacement(CLUSTER, 2, "10.0.0.1", {"peer": 15003}, b"\xab" * 20)
    assert placement.peer_context() == {"peer_id": "ab" * 20, "ip": "10.0.0.1", "port": 15003, "origin": True}


def test_replicate_copies_to_every_other_owner_and_survives_a_failure(tmp_path: Path) -> None:
    owners = Ring(CLUSTER, 3).locations(DIGEST.hex)
    me, first, second = owners
    placement = OriginPlacement(CLUSTER, 3, "unused", {}, b"", self_address=me)
    sent: list[tuple[str, Digest, str]] = []
    (tmp_path / DIGEST.hex).write_bytes(b"replicated")
    replicator = Replicator(placement, lambda d: tmp_path / d.hex, lambda a: Sender(sent, a, {first}),
                            Journal(":memory:", Clock()))
    replicator.replicate(DIGEST)
    assert sent == [(second, DIGEST, str(tmp_path / DIGEST.hex))]
    assert replicator.holds(DIGEST)  # the copy to the first owner still waits


def test_no_copy_when_this_origin_is_the_only_owner(tmp_path: Path) -> None:
    (me,) = Ring(CLUSTER, 1).locations(DIGEST.hex)
    placement = OriginPlacement(CLUSTER, 1, "unused", {}, b"", self_address=me)
    sent: list[tuple[str, Digest, str]] = []
    Replicator(placement, lambda d: tmp_path, lambda a: Sender(sent, a, set()),
               Journal(":memory:", Clock())).replicate(DIGEST)
    assert sent == []


def test_a_failed_copy_is_retried_with_backoff_and_journaled_until_it_lands(tmp_path: Path) -> None:
    owners = Ring(CLUSTER, 3).locations(DIGEST.hex)
    me, first, second = owners
    placement = OriginPlacement(CLUSTER, 3, "unused", {}, b"", self_address=me)
    blob = tmp_path / "blob"
    blob.write_bytes(b"replicated")
    sent: list[tuple[str, Digest, str]] = []
    broken = {first}
    clock = Clock()
    journal = tmp_path / "journal.sqlite"
    replicator = Replicator(placement, lambda d: blob, lambda a: Sender(sent, a, broken),
                            Journal(journal, clock), retry=(1.0, 4.0))
    replicator.replicate(DIGEST)
    assert [a for a, _, _ in sent] == [second]
    assert [r.payload for r in read_rows(journal)] == [{"digest": str(DIGEST), "owner": first}]
    clock.advance(1.0)  # still down: the next try waits twice as long
    assert [a for a, _, _ in sent] == [second]
    broken.clear()
    clock.advance(1.9)
    assert [a for a, _, _ in sent] == [second]
    clock.advance(0.1)
    assert [a for a, _, _ in sent] == [second, first]  # only the owner that lacked it
    assert read_rows(journal) == [] and not clock.getDelayedCalls()
