"""The interface every storage backend implements, and the factory that builds one from config.

A backend stores named blobs (``name`` is a digest's hex for blobs, ``repo:tag`` for tags)
inside a ``namespace``. Every method returns a Deferred; failures are :class:`BlobNotFound`
(the name does not exist) or :class:`BackendError` (anything else, with a message).

Config: ``{"type": "fs", ...type-specific keys}``. New kinds register a line in
``BACKEND_TYPES``: ``type name -> "module:factory"`` where ``factory(config, reactor)``
returns the backend.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from twisted.internet.defer import Deferred

from kraken.core.reactor import IServerReactor, default_reactor


class BlobNotFound(Exception):
    """The backend has no blob of that name."""


class BackendError(Exception):
    """The backend failed for a reason other than a missing blob."""


@runtime_checkable
class Backend(Protocol):
    def stat(self, namespace: str, name: str) -> Deferred[int]:
        """Size in bytes; fails with :class:`BlobNotFound`."""
        ...

    def download(self, namespace: str, name: str, dest_path: str) -> Deferred[None]:
        """Stream the blob into the file *dest_path* (created or truncated)."""
        ...

    def upload(self, namespace: str, name: str, src_path: str) -> Deferred[None]:
        """Stream the file *src_path* into the backend under *name*."""
        ...

    def list(self, prefix: str) -> Deferred[list[str]]:
        """Every stored name starting with *prefix*, sorted."""
        ...

    def delete(self, namespace: str, name: str) -> Deferred[None]:
        """Remove the blob *name*; fails with :class:`BlobNotFound` when there is none."""
        ...


@dataclass(frozen=True)
class BackendEntry:
    name: str
    size: int
    modified: float  # seconds since the epoch


@runtime_checkable
class ListsEntries(Protocol):
    """A backend that can tell when each blob was written (garbage collection needs it)."""

    def entries(self, prefix: str) -> Deferred[list[BackendEntry]]:
        """Every stored name starting with *prefix*, with its size and modification time."""
        ...


BACKEND_TYPES: dict[str, str] = {
    "fs": "kraken.backends.fs:from_config",
    "s3": "kraken.backends.s3:from_config",
    "registry": "kraken.backends.registry:from_config",
}


def make_backend(config: dict[str, Any], reactor: IServerReactor | None = None) -> Backend:
    """Build the backend that *config* (``{"type": ..., ...}``) describes."""
    if not isinstance(config, dict) or "type" not in config:
        raise ValueError("backend config must be a mapping with a 'type' key")
    kind = config["type"]
    target = BACKEND_TYPES.get(kind)
    if target is None:
        raise ValueError(f"unknown backend type {kind!r}; known: {', '.join(sorted(BACKEND_TYPES))}")
    module, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module), attr)
    if reactor is None:
        reactor = default_reactor()
    return factory({k: v for k, v in config.items() if k != "type"}, reactor)


@dataclass
class NamespaceRoute:
    pattern: re.Pattern[str]
    backend: Backend


class BackendRouter:
    """Ordered ``(namespace regex, backend)`` pairs; the first regex that matches wins.

    Regexes are matched from the start of the namespace (``re.match``) — unlike the
    original, which searched anywhere in it.
    """

    def __init__(self, routes: list[NamespaceRoute]) -> None:
        self.routes = routes

    @classmethod
    def from_config(
        cls, entries: list[dict[str, Any]], reactor: IServerReactor | None = None
    ) -> BackendRouter:
        routes = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or "backend" not in entry:
                raise ValueError(f"backends[{i}]: expected {{namespace: REGEX, backend: {{type: ...}}}}")
            try:
                pattern = re.compile(entry.get("namespace", ".*"))
            except re.error as e:
                raise ValueError(f"backends[{i}].namespace: bad regular expression: {e}") from None
            routes.append(NamespaceRoute(pattern, make_backend(entry["backend"], reactor)))
        return cls(routes)

    def for_namespace(self, namespace: str) -> Backend | None:
        for route in self.routes:
            if route.pattern.match(namespace):
                return route.backend
        return None
