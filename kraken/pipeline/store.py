"""Definitions that survive restarts: a SQLite file kept in step with every change, and a
project folder of JSON files applied at start.

SQLite table ``definitions(kind, key, name, body, started, options, seq)``: one row per
service or pipeline (``kind`` service/pipeline) and one for the routing table; a pipeline's
options hold its live ``version``, the ``previous`` one and the versions started ``beside``
it. Table ``pipeline_versions(key, version, name, body, at)`` keeps every version defined. Writes are
small and synchronous (one row per management operation), each committed and fsynced before
the API answers (:func:`~kraken.core.sqlitedb.open_durable`). A damaged file stops the start
with one line naming it; a row that does not decode is logged, counted and skipped.

Project folder layout (the original's ``lib/kraken``): ``services/*.json`` (an object or an
array of them), ``pipelines/*.json``, ``routes.json``. At start the stored state is restored
first, then the folder is applied on top (defined and started), so edited files win.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from kraken.core.metrics import Metrics
from kraken.core.sqlitedb import open_durable

log = Logger(namespace="kraken.pipeline.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS definitions (
    kind TEXT NOT NULL, key TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL,
    started INTEGER NOT NULL DEFAULT 0, options TEXT NOT NULL DEFAULT '{}', seq INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS pipeline_versions (
    key TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (key, version)
)
"""


class Store:
    def __init__(self, path: str, metrics: Metrics | None = None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = open_durable(path, isolation_level=None)
        self.m_corrupt = (
            metrics.counter("corrupt_entries", "unreadable entries found on disk, by store", ["store"])
            if metrics is not None else None
        )
        self.db.executescript(_SCHEMA)
        row = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM definitions").fetchone()
        self.seq = int(row[0])

    def put(
        self, kind: str, key: str, name: str, body: Any, started: bool, options: dict[str, Any] | None
    ) -> None:
        old = self.db.execute(
            "SELECT seq, body FROM definitions WHERE kind=? AND key=?", (kind, key)
        ).fetchone()
        text = json.dumps(body, separators=(",", ":"))
        if old is not None and old[1] == text:
            seq = old[0]
        else:
            self.seq += 1
            seq = self.seq
        self.db.execute(
            "INSERT OR REPLACE INTO definitions(kind, key, name, body, started, options, seq)"
            " VALUES (?,?,?,?,?,?,?)",
            (kind, key, name, text, int(started), json.dumps(options or {}), seq),
        )

    def delete(self, kind: str, key: str) -> None:
        self.db.execute("DELETE FROM definitions WHERE kind=? AND key=?", (kind, key))

    def load(self, kind: str, key: str | None = None) -> Iterator[tuple[Any, bool, dict[str, Any]]]:
        if key is None:
            rows = self.db.execute(
                "SELECT key, body, started, options FROM definitions WHERE kind=? ORDER BY seq", (kind,)
            ).fetchall()
        else:
            rows = self.db.execute(
                "SELECT key, body, started, options FROM definitions WHERE kind=? AND key=?", (kind, key)
            ).fetchall()
        for key, body, started, options in rows:
            try:
                decoded = json.loads(body), bool(started), json.loads(options)
                if not isinstance(decoded[2], dict):
                    raise ValueError(f"options are {type(decoded[2]).__name__}, not an object")
            except (ValueError, TypeError) as e:
                if self.m_corrupt is not None:
                    self.m_corrupt.labels("definitions").inc()
                log.error("skipping stored {kind} {key!r}: unreadable row ({error})", kind=kind, key=key,
                          error=str(e))
                continue
            yield decoded

    def put_version(self, key: str, name: str, version: int, body: Any, at: float) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO pipeline_versions(key, version, name, body, at) VALUES (?,?,?,?,?)",
            (key, version, name, json.dumps(body, separators=(",", ":")), at),
        )

    def versions(self) -> Iterator[tuple[str, str, int, Any, float]]:
        """Every pipeline version kept: (key, name, version, definition, defined at)."""
        rows = self.db.execute(
            "SELECT key, name, version, body, at FROM pipeline_versions ORDER BY key, version"
        )
        for key, name, version, body, at in rows.fetchall():
            try:
                definition = json.loads(body)
            except ValueError as e:
                if self.m_corrupt is not None:
                    self.m_corrupt.labels("pipeline_versions").inc()
                log.error("skipping stored version {v} of {key!r}: {e}", v=version, key=key, e=str(e))
                continue
            yield key, name, version, definition, at

    def close(self) -> None:
        self.db.close()


HISTORY = "history/pipelines"


def write_version(folder: str, key: str, version: int, definition: Any) -> None:
    """Keep a pipeline version in the project folder too: ``history/pipelines/KEY/vN.json``."""
    target = Path(folder) / HISTORY / key
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"v{version}.json"
    if path.exists():
        return
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(definition, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)


def read_history(folder: str) -> Iterator[tuple[str, int, Any]]:
    """The project folder's kept versions: (key, version, definition)."""
    root = Path(folder) / HISTORY
    for path in sorted(root.glob("*/v*.json")):
        number = path.stem[1:]
        if number.isdigit():
            yield path.parent.name, int(number), json.loads(path.read_text())


def read_project(folder: str) -> tuple[list[Any], list[Any], dict[str, str] | None]:
    """Service definitions, pipeline definitions (file order) and routes of a project folder."""
    root = Path(folder)
    services: list[Any] = []
    pipelines: list[Any] = []
    for path in sorted((root / "services").glob("*.json")):
        data = json.loads(path.read_text())
        services.extend(data if isinstance(data, list) else [data])
    for path in sorted((root / "pipelines").glob("*.json")):
        data = json.loads(path.read_text())
        pipelines.extend(data if isinstance(data, list) else [data])
    routes_file = root / "routes.json"
    routes = json.loads(routes_file.read_text()) if routes_file.is_file() else None
    return services, pipelines, routes
