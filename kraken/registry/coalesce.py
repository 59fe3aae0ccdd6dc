"""Concurrent lookups of one key share requests, yet every answer is fresh.

A caller that asks while a request for its key is in flight does not join that request (it
may have been answered from state older than the question); it waits for the *next* one,
which starts as soon as the current one ends and answers every caller queued meanwhile.
Under load this is at most one request in flight and one batch waiting per key, and no
caller ever sees an answer read before it asked: moved tags stay visible at once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure


class FreshCoalescer:
    def __init__(self, fetch: Callable[..., Deferred[Any]]) -> None:
        self.fetch = fetch
        self.requests = 0
        self._inflight: dict[Hashable, list[Deferred[Any]]] = {}
        self._queued: dict[Hashable, list[Deferred[Any]]] = {}

    def get(self, *key: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        if key in self._inflight:
            self._queued.setdefault(key, []).append(d)
        else:
            self._start(key, [d])
        return d

    def _start(self, key: tuple[Any, ...], waiters: list[Deferred[Any]]) -> None:
        self._inflight[key] = waiters
        self.requests += 1
        maybeDeferred(self.fetch, *key).addBoth(self._answered, key)

    def _answered(self, result: Any, key: tuple[Any, ...]) -> None:
        waiters = self._inflight.pop(key)
        queued = self._queued.pop(key, None)
        if queued:
            self._start(key, queued)
        for d in waiters:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)
