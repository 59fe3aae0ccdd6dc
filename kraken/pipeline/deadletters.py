"""The dead-letter store: events that failed in a component whose ``on_error`` is
``dead_letter``, with their error, the components they passed (the trail), the event as the
failing component got it and the pipeline's input, kept in SQLite until replayed or deleted.

Table ``dead_letters(id, pipeline, component, at, attempts, body)``; ``body`` is the whole
entry as JSON. Each entry is committed (fsynced, :func:`~kraken.core.sqlitedb.open_durable`)
before the caller gets the error event naming it. The store holds at most ``limit`` entries:
past it a failed event is not stored (its error event says so) and the refusal is counted.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from twisted.logger import Logger

from kraken.pipeline.answers import TooLarge, encode
from kraken.pipeline.names import modulize
from kraken.pipeline.refusals import Refusals

log = Logger(namespace="kraken.pipeline.deadletters")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, pipeline TEXT NOT NULL, component TEXT NOT NULL,
    at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, body TEXT NOT NULL
)
"""
_SUMMARY = ("id", "pipeline", "version", "component", "component_type", "error", "at", "attempts", "ref")
MAX_LIST = 1000


class DeadLetters:
    def __init__(
        self, db: sqlite3.Connection, limit: int = 100_000, max_bytes: int = 16 * 1024 * 1024,
        refusals: Refusals | None = None,
    ) -> None:
        self.db = db
        self.limit = limit
        self.max_bytes = max_bytes
        self.refusals = refusals if refusals is not None else Refusals()
        self.db.execute(_SCHEMA)
        self.count = int(self.db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])

    def add(self, entry: dict[str, Any]) -> int | None:
        """Store *entry*; its id, or ``None`` when the store is full or the entry too large."""
        where = f"pipeline {entry.get('pipeline')}"
        if self.count >= self.limit:
            self.refusals.refuse("dead_letters", where, f"the dead-letter store holds {self.limit} entries")
            return None
        entry = {**entry, "attempts": 0}
        try:
            body = encode(entry, self.max_bytes).decode("utf-8")
        except TooLarge as e:
            self.refusals.refuse("dead_letters", where, f"dead letter not stored: {e}")
            return None
        with self.db:
            cursor = self.db.execute(
                "INSERT INTO dead_letters(pipeline, component, at, attempts, body) VALUES (?,?,?,0,?)",
                (modulize(entry["pipeline"]), entry["component"], entry["at"], body),
            )
        self.count += 1
        return cursor.lastrowid

    def get(self, entry_id: int) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT id, attempts, body FROM dead_letters WHERE id=?", (entry_id,)
        ).fetchone()
        if row is None:
            return None
        return {**json.loads(row[2]), "id": row[0], "attempts": row[1]}

    def summaries(
        self, pipeline: str | None = None, after: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Summaries (no event, input or trail), oldest first, ids above *after*."""
        limit = max(1, min(limit, MAX_LIST))
        if pipeline is None:
            rows = self.db.execute(
                "SELECT id, attempts, body FROM dead_letters WHERE id>? ORDER BY id LIMIT ?", (after, limit)
            )
        else:
            rows = self.db.execute(
                "SELECT id, attempts, body FROM dead_letters WHERE id>? AND pipeline=? ORDER BY id LIMIT ?",
                (after, modulize(pipeline), limit),
            )
        out = []
        for entry_id, attempts, body in rows.fetchall():
            entry = {**json.loads(body), "id": entry_id, "attempts": attempts}
            out.append({k: entry.get(k) for k in _SUMMARY})
        return out

    def ids(self, pipeline: str | None = None) -> list[int]:
        if pipeline is None:
            rows = self.db.execute("SELECT id FROM dead_letters ORDER BY id")
        else:
            rows = self.db.execute(
                "SELECT id FROM dead_letters WHERE pipeline=? ORDER BY id", (modulize(pipeline),)
            )
        return [r[0] for r in rows.fetchall()]

    def set_attempts(self, entry_id: int, attempts: int) -> None:
        with self.db:
            self.db.execute("UPDATE dead_letters SET attempts = ? WHERE id=?", (attempts, entry_id))

    def delete(self, entry_id: int) -> bool:
        with self.db:
            gone = self.db.execute("DELETE FROM dead_letters WHERE id=?", (entry_id,)).rowcount
        self.count -= gone
        return bool(gone)
