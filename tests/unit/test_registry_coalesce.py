"""Fresh coalescing of tag lookups: shared requests, never an answer older than the question."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from kraken.registry.coalesce import FreshCoalescer


class Backend:
    def __init__(self) -> None:
        self.pending: list[tuple[tuple[Any, ...], Deferred[Any]]] = []

    def fetch(self, *key: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((key, d))
        return d

    def answer(self, value: Any) -> None:
        _, d = self.pending.pop(0)
        d.callback(value)


def results(d: Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


def test_callers_during_a_request_wait_for_the_next_one() -> None:
    backend = Backend()
    c = FreshCoalescer(backend.fetch)
    first = results(c.get("repo", "v1"))
    late = [results(c.get("repo", "v1")) for _ in range(5)]
    assert len(backend.pending) == 1
    backend.answer("sha256:old")  # read before the late callers asked: not for them
    assert first == ["sha256:old"] and all(r == [] for r in late)
    assert len(backend.pending) == 1  # one request for all five
    backend.answer("sha256:new")
    assert all(r == ["sha256:new"] for r in late)
    assert c.requests == 2 and not backend.pending


def test_keys_are_independent_and_failures_reach_every_waiter() -> None:
    backend = Backend()
    c = FreshCoalescer(backend.fetch)
    a = results(c.get("a", "v1"))
    b = results(c.get("b", "v1"))
    assert len(backend.pending) == 2
    _, d = backend.pending.pop(0)
    d.errback(RuntimeError("down"))
    assert a and a[0].check(RuntimeError)
    backend.answer("sha256:b")
    assert b == ["sha256:b"]


def test_queued_waiters_all_see_a_failure() -> None:
    backend = Backend()
    c = FreshCoalescer(backend.fetch)
    c.get("a").addErrback(lambda f: None)
    waiting = [results(c.get("a")) for _ in range(3)]
    backend.answer(None)
    _, d = backend.pending.pop(0)
    d.errback(ValueError("bad"))
    assert all(w and w[0].check(ValueError) for w in waiting)
