"""What services and pipelines share: API errors as atoms, states, per-name serialisation.

States are derived: ``undefined`` (no definition), ``not_ready`` (defined, stopped),
``ready`` (started). :class:`KeyedLock` runs management operations on one name one after
another, even when an operation waits (an HTTP client closing its pool, a lambda loading).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer

UNDEFINED = ":undefined"
NOT_READY = ":not_ready"
READY = ":ready"
ALREADY_STARTED = ":already_started"


class ApiError(Exception):
    """An operation refused with the original's error text (``:undefined``, ``Missing type``...)."""

    def __init__(self, error: str, details: Any = None) -> None:
        super().__init__(error)
        self.error = error
        self.details = details


class KeyedLock:
    def __init__(self) -> None:
        self._locks: dict[str, defer.DeferredLock] = {}

    def run(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = defer.DeferredLock()

        def release(result: Any) -> Any:
            if not lock.locked and not lock.waiting and self._locks.get(key) is lock:
                del self._locks[key]
            return result

        return lock.run(fn, *args, **kwargs).addBoth(release)
