"""What a module declares (mutations, discoverables) and the API the engine hands it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from kraken.state import model
from kraken.state.model import Node


class Context(Enum):
    SELF = "SELF"
    CHILD = "CHILD"
    ALL = "ALL"


@dataclass(frozen=True)
class Mutation:
    """One declared state change; values are typed (enum members), URLs are node paths."""

    si: str
    id: str
    mutates: dict[str, tuple[Any, Any]]
    requires: dict[str, Any] = field(default_factory=dict)
    excludes: dict[str, Any] = field(default_factory=dict)
    context: Context = Context.CHILD
    timeout: float = 0.0
    fail_to: tuple[str, Any] | None = None
    cost: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.si}/{self.id}"

    def __hash__(self) -> int:
        return hash(self.name)


def declare(
    si: str,
    mutation_id: str,
    mutates: dict[str, tuple[str, str]],
    requires: dict[str, str] | None = None,
    excludes: dict[str, str] | None = None,
    context: Context | str = Context.CHILD,
    timeout: float = 0.0,
    fail_to: tuple[str, str] | None = None,
    cost: float = 1.0,
) -> Mutation:
    """Build a :class:`Mutation` from value names; URLs both mutated and required are dropped
    from requires/excludes, as in the original."""
    typed_mutates = {url: (model.value_of(url, a), model.value_of(url, b)) for url, (a, b) in mutates.items()}
    req = {u: model.value_of(u, v) for u, v in (requires or {}).items() if u not in typed_mutates}
    exc = {u: model.value_of(u, v) for u, v in (excludes or {}).items() if u not in typed_mutates}
    fail = (fail_to[0], model.value_of(fail_to[0], fail_to[1])) if fail_to else None
    if cost <= 0:
        raise ValueError(f"{si}/{mutation_id}: cost must be positive")
    return Mutation(si, mutation_id, typed_mutates, req, exc, Context(context), timeout, fail, cost)


class ModuleAPI(Protocol):
    """What the engine offers a module."""

    clock: IReactorTime
    reactor: IReactorTime  # the real reactor in a server (threads, shutdown triggers), else the clock
    self_id: str

    def discover(self, si: str, node_id: str, url: str, value: str) -> bool: ...

    def fail(self, si: str, node_id: str, mutation_id: str, reason: str) -> None: ...

    def report(self, si: str, node_id: str, extension: str, body: dict[str, Any]) -> bool: ...

    def cfg_nodes(self) -> list[Node]: ...

    def dsc_node(self, node_id: str) -> Node | None: ...


class ActionError(Exception):
    """An action a module cannot perform; ``status`` and ``code`` for the HTTP answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ConsoleSink(Protocol):
    """What a BMC link reports to, in the reactor thread."""

    def connected(self) -> None: ...

    def output(self, data: bytes) -> None: ...

    def info(self, message: str) -> None: ...

    def ended(self, error: ActionError | None) -> None: ...


class ConsoleLink(Protocol):
    """One open console at a BMC; :meth:`send` is called again only once its Deferred fired."""

    def send(self, data: bytes) -> Deferred[None]: ...

    def close(self) -> None: ...


Starter = Callable[[ConsoleSink], ConsoleLink]


class Module:
    """Base class: subclasses set ``si``, build ``mutations`` and implement ``mutate``.

    ``platform`` names the nodes whose hardware the module drives; ``reports`` the extension
    type URLs it may write into a node's Dsc (inventory, the BMC's last error); ``actions``
    the one-shot operations :meth:`act` performs on demand (restart, identify LED, ...).
    """

    si: ClassVar[str] = ""
    module_url: ClassVar[str] = ""
    platform: ClassVar[str] = ""
    reports: ClassVar[tuple[str, ...]] = ()
    actions: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = dict(config or {})
        self.api: ModuleAPI | None = None
        self.mutations: list[Mutation] = self.declare_mutations()
        self.extra_discoverables: dict[str, set[str]] = {}

    def declare_mutations(self) -> list[Mutation]:
        return []

    def discoverables(self) -> dict[str, set[str]]:
        """URL → value names this module may report: every from/to/fail-to value plus extras."""
        out: dict[str, set[str]] = {f"/Services/{self.si}/State": {"RUN", "STOP", "ERROR", "INIT"}}
        for m in self.mutations:
            for url, (a, b) in m.mutates.items():
                out.setdefault(url, set()).update({model.printable(a), model.printable(b)})
            if m.fail_to is not None:
                out.setdefault(m.fail_to[0], set()).add(model.printable(m.fail_to[1]))
        for url, names in self.extra_discoverables.items():
            out.setdefault(url, set()).update(names)
        return out

    def start(self, api: ModuleAPI) -> Any:
        """Start the module's service; may return a Deferred."""
        self.api = api

    def stop(self) -> Any:
        return None

    def mutate(self, mutation: Mutation, cfg: Node, dsc: Node) -> None:
        raise NotImplementedError

    def interrupt(self, node_id: str) -> None:
        """Drop queued work for *node_id* (its mutation timed out)."""

    def act(self, action: str, cfg: Node, args: dict[str, Any]) -> Any:
        """Perform *action* on the node; returns (a Deferred of) a JSON-able result or raises
        :class:`ActionError`."""
        raise ActionError(409, "NO_ACTION", f"module {self.si} has no action {action!r}")

    def console(self, cfg: Node) -> Starter:
        """How to open the node's serial console, or :class:`ActionError` saying why there is none."""
        raise ActionError(409, "NO_CONSOLE", f"module {self.si} offers no serial console")
