"""Events and the bus that fans them out to named, filtered listeners.

Dispatch is synchronous but never re-entrant: events emitted while listeners run are queued
and delivered, in order, once the current batch is done.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from twisted.logger import Logger

from kraken.state.model import printable, split_url

log = Logger(namespace="kraken.state.events")


class EventType(IntEnum):
    CONTROL = 0
    STATE_CHANGE = 1
    STATE_MUTATION = 2
    STATE_SYNC = 3
    API = 4
    DISCOVERY = 5
    ALL = 6
    OPERATION = 7  # ours: progress of a bulk operation on a group


class ChangeKind(IntEnum):
    CREATE = 0
    READ = 1
    UPDATE = 2
    DELETE = 3
    CFG_READ = 4
    CFG_UPDATE = 5


class MutationKind(IntEnum):
    MUTATE = 0
    INTERRUPT = 1


@dataclass(frozen=True, slots=True)
class StateChange:
    kind: ChangeKind
    value: Any

    def describe(self, url: str) -> str:
        return f"({self.kind.name}) {url} = {printable(self.value)}"


@dataclass(frozen=True, slots=True)
class MutationData:
    kind: MutationKind
    si: str
    mutation: str

    def describe(self, url: str) -> str:
        return f"({self.kind.name}) {split_url(url)[0]} : {self.si} -> {self.mutation}"


@dataclass(frozen=True, slots=True)
class DiscoveryData:
    si: str
    value: str

    def describe(self, url: str) -> str:
        return f"({self.si}) {url} == {self.value}"


@dataclass(frozen=True, slots=True)
class OperationData:
    progress: dict[str, Any]

    def describe(self, url: str) -> str:
        p = self.progress
        state = "complete" if p["complete"] else "running"
        return (
            f"(PROGRESS) operation {p['id']} on group {p['group']}: {p['done']}/{p['total']} done, "
            f"{p['failed']} failed, {state}"
        )


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    url: str
    data: Any

    def describe(self) -> str:
        return self.data.describe(self.url)


Listener = Callable[[Event], None]
Filter = Callable[[Event], bool]


@dataclass
class _Subscription:
    types: frozenset[EventType]
    filter: Filter | None
    callback: Listener


class EventBus:
    """Named listeners by event type; re-subscribing a name replaces its subscription."""

    def __init__(self) -> None:
        self._subs: dict[str, _Subscription] = {}
        self._by_type: dict[EventType, list[_Subscription]] = {}
        self._queue: deque[Event] = deque()
        self._dispatching = False
        self.delivered = 0
        self.emitted = 0

    def subscribe(
        self, name: str, types: Iterable[EventType], callback: Listener, filter: Filter | None = None
    ) -> None:
        kinds = frozenset(types)
        if EventType.ALL in kinds:
            kinds = frozenset(t for t in EventType if t is not EventType.ALL)
        self._subs[name] = _Subscription(kinds, filter, callback)
        self._reindex()

    def unsubscribe(self, name: str) -> None:
        if self._subs.pop(name, None) is not None:
            self._reindex()

    def _reindex(self) -> None:
        index: dict[EventType, list[_Subscription]] = {}
        for sub in self._subs.values():
            for t in sub.types:
                index.setdefault(t, []).append(sub)
        self._by_type = index

    def emit(self, events: Iterable[Event]) -> None:
        self._queue.extend(events)
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._queue:
                event = self._queue.popleft()
                self.emitted += 1
                for sub in self._by_type.get(event.type, ()):
                    if sub.filter is not None and not sub.filter(event):
                        continue
                    self.delivered += 1
                    try:
                        sub.callback(event)
                    except Exception:
                        log.failure("listener failed on {event}", event=event.describe())
        finally:
            self._dispatching = False

    def emit_one(self, event: Event) -> None:
        self.emit((event,))


def url_filter(prefix: str) -> Filter:
    """Accept events whose URL starts with *prefix* (e.g. a node id, or ``<id>:/PhysState``)."""
    return lambda event: event.url.startswith(prefix)
