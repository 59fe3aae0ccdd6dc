"""OriginCluster (the shared client of the origins): owners asked of any member, each request on
the owners in turn, origins that just failed tried last."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from kraken.backends.base import BlobNotFound
from kraken.core.digest import Digest
from kraken.core.httpclient import HTTPStatusError
from kraken.p2p.origins import OriginCluster

D = Digest.of_bytes(b"owned")


class FakeOrigin:
    def __init__(self, base: str, owners: list[str] | None = None, has: bool = True, down: bool = False,
                 error: int = 0) -> None:
        self.base, self.owners, self.has, self.down, self.error = base, owners, has, down, error
        self.calls: list[str] = []

    def _answer(self, what: str, value: Any) -> Deferred[Any]:
        self.calls.append(what)
        if self.down:
            return fail(ConnectionRefusedError(self.base))
        if self.error:
            return fail(HTTPStatusError("GET", self.base, self.error, b"broken"))
        return succeed(value)

    def locations(self, digest: Digest) -> Deferred[Any]:
        return self._answer("locations", self.owners or [])

    def stat(self, namespace: str, digest: Digest) -> Deferred[Any]:
        return self._answer("stat", 42 if self.has else None)

    def download(self, namespace: str, digest: Digest, dest: str, local: bool = False) -> Deferred[Any]:
        if self.down or self.error or self.has:
            return self._answer("download", None)
        self.calls.append("download")
        return fail(BlobNotFound(str(digest)))

    def metainfo(self, namespace: str, digest: Digest) -> Deferred[Any]:
        return self._answer("metainfo", (200, b"{}") if self.has else (404, b"{}"))

    def upload(self, namespace: str, digest: Digest, path: str, progress: Any = None) -> Deferred[Any]:
        return self._answer("upload", None)


def cluster(clock: Clock, *origins: FakeOrigin, members: list[str]) -> OriginCluster:
    c = OriginCluster(clock, members, None)
    for o in origins:
        c.clients[o.base] = o  # type: ignore[assignment]
    return c


@pytest_twisted.inlineCallbacks
def test_owners_come_from_any_member_and_requests_fail_over_to_the_next_owner() -> Any:
    clock = Clock()
    a, b = FakeOrigin("a", down=True), FakeOrigin("b", owners=["o1", "o2"])
    o1, o2 = FakeOrigin("o1", down=True), FakeOrigin("o2")
    c = cluster(clock, a, b, o1, o2, members=["a", "b"])
    assert (yield c.download("ns", D, "/dev/null")) is None
    assert o1.calls == ["download"] and o2.calls == ["download"]
    assert not c.health.healthy("a") and not c.health.healthy("o1")
    base = yield c.upload("ns", D, "/dev/null")
    assert base == "o2" and o1.calls == ["download"], "the owner that just failed is tried last"
    assert a.calls == ["locations"], "a member that just failed is asked last"
    clock.advance(11)
    assert c.health.healthy("o1")


@pytest_twisted.inlineCallbacks
def test_stat_and_metainfo_ask_the_next_owner_when_one_lacks_the_blob_or_fails() -> Any:
    clock = Clock()
    m = FakeOrigin("m", owners=["o1", "o2"])
    o1, o2 = FakeOrigin("o1", has=False), FakeOrigin("o2")
    c = cluster(clock, m, o1, o2, members=["m"])
    assert (yield c.stat("ns", D)) == 42
    assert (yield c.metainfo("ns", D)) == (200, b"{}", "o2")
    assert c.health.healthy("o1"), "a 404 is no failure of the origin"
    o2.error = 503  # one owner lacks it, the other fails: the failure is the answer (not a 404)
    with pytest.raises(HTTPStatusError):
        yield c.metainfo("ns", D)
    assert not c.health.healthy("o2")
    o2.has, o2.error = False, 0
    assert (yield c.metainfo("ns", D)) == (404, b"{}", "o1")
    assert (yield c.stat("ns", D)) is None
