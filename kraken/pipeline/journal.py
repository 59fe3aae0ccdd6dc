"""The journal of durable pipelines: every event a durable pipeline accepts, and its result.

An accepted event gets an id and a row (its input, its idempotency key when the pipeline
defines one); its result fills the row once it has one (the event's result, a list when a
composer fanned out, ``null`` when nothing came out, or its error event). Rows are written
in **group commits**: everything accepted or finished within ``interval`` (2 ms) goes into
one transaction (one fsync), made in the writer's thread when there is one (one commit at a
time; what arrives meanwhile is the next batch), and a ``cast`` is answered only once its
events' rows are committed. Until then queries look at the batches in memory.

After a crash (kill -9) the rows without a result are run again from the start when their
pipeline starts (at least once inside); the row keeps one result per id, and an event sent
again with the same idempotency key gets the first one's id and result instead of running
(exactly once as the caller sees it). Finished rows are kept ``retention`` seconds.

Table ``journal(id, pipeline, key, input, result, accepted_at, done_at)``.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable
from itertools import count
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from kraken.pipeline.answers import finite
from kraken.pipeline.engine.packets import Collector
from kraken.pipeline.names import modulize

if TYPE_CHECKING:
    from kraken.pipeline.engine.runtime import Pipeline

log = Logger(namespace="kraken.pipeline.journal")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, key TEXT, input TEXT NOT NULL,
    result TEXT, accepted_at REAL NOT NULL, done_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS journal_keys ON journal(pipeline, key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS journal_open ON journal(pipeline) WHERE result IS NULL;
CREATE INDEX IF NOT EXISTS journal_done ON journal(done_at) WHERE done_at IS NOT NULL;
"""
RECOVERY_WINDOW = 200
PRUNE_EVERY = 60.0
MAX_LOOKUP = 1000


# the writer's own connection, and how to run a function in its thread (a Deferred of the result)
Writer = tuple[sqlite3.Connection, Callable[..., "defer.Deferred[Any]"]]

_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode  # one, reused


def _json(value: Any) -> str:
    try:
        return _ENCODE(value)
    except ValueError:
        return _ENCODE(finite(value))


class Journal:
    def __init__(
        self,
        db: sqlite3.Connection,
        clock: IReactorTime,
        retention: float = 86400.0,
        interval: float = 0.002,
        writer: Writer | None = None,
    ) -> None:
        """*db* answers queries; *writer* (a connection of its own to the same file and a way to
        run a function in another thread) makes commits without holding the reactor during
        the fsync. Without one, commits run here, on *db*."""
        self.db = db
        self.writer = writer
        # the batch being committed: (inserts, finished, keys), as below
        self.committing: tuple[dict[str, list[Any]], dict[str, tuple[str, float]], dict[Any, str]] | None
        self.committing = None
        self.interval = interval  # a commit gathers what this many seconds accept and finish
        self.clock = clock
        self.retention = retention
        self.db.executescript(_SCHEMA)
        self.prefix = secrets.token_hex(4)  # ids stay unique across restarts
        self.numbers = count(1)
        self.inserts: dict[str, list[Any]] = {}  # id -> row, not yet committed
        self.finished: dict[str, tuple[str, float]] = {}  # id -> (result JSON, at), not yet committed
        self.keys: dict[tuple[str, str], str] = {}  # (pipeline, key) -> id, not yet committed
        self.open: dict[str, list[Collector]] = {}  # id of a running event -> duplicates waiting
        self.synced_waiters: list[defer.Deferred[None]] = []
        self.flush_call: IDelayedCall | None = None
        self.pruned_at = clock.seconds()
        self.commits = 0
        self.failures = 0

    # -- accepting -------------------------------------------------------------------------------
    def accept(self, pipeline: Pipeline, collector: Collector, event: Any) -> bool:
        """Journal *event* for *collector*: True to run it, False when it is a duplicate of an
        event already accepted (the collector then gets that event's result)."""
        key = pipeline.durable_key(event)
        where = modulize(pipeline.name)
        if collector.event_id is None and key is not None:
            known = self.keys.get((where, key)) or self._committing_key(where, key) or self._known(where, key)
            if known is not None:
                collector.event_id = known
                self._answer_duplicate(known, collector)
                return False
        if collector.event_id is None:
            collector.event_id = f"{self.prefix}-{next(self.numbers)}"
            self.inserts[collector.event_id] = [
                collector.event_id, where, key, _json(event), self.clock.seconds()
            ]
            if key is not None:
                self.keys[(where, key)] = collector.event_id
            self._schedule()
        self.open.setdefault(collector.event_id, [])
        self._track(collector)
        return True

    def _committing_key(self, where: str, key: str) -> str | None:
        return self.committing[2].get((where, key)) if self.committing is not None else None

    def _uncommitted_result(self, event_id: str) -> str | None:
        done = self.finished.get(event_id)
        if done is None and self.committing is not None:
            done = self.committing[1].get(event_id)
            if done is None:
                row = self.committing[0].get(event_id)
                return row[5] if row is not None and len(row) > 5 else None
        return done[0] if done is not None else None

    def _known(self, where: str, key: str) -> str | None:
        row = self.db.execute("SELECT id FROM journal WHERE pipeline=? AND key=?", (where, key)).fetchone()
        return row[0] if row is not None else None

    def _answer_duplicate(self, event_id: str, collector: Collector) -> None:
        waiting = self.open.get(event_id)
        if waiting is not None:
            waiting.append(collector)
            return
        text = self._uncommitted_result(event_id)
        if text is None:
            row = self.db.execute("SELECT result FROM journal WHERE id=?", (event_id,)).fetchone()
            text = row[0] if row is not None else None
        if text is None:  # accepted before a restart and not yet run again: wait for it
            self.open.setdefault(event_id, []).append(collector)
            return
        _deliver(collector, json.loads(text))

    def _track(self, collector: Collector) -> None:
        results: list[Any] = []
        on_result, on_done = collector.on_result, collector.on_done

        def result(value: Any) -> None:
            results.append(value)
            if on_result is not None:
                on_result(value)
            else:
                collector.results.append(value)

        def done(c: Collector) -> None:
            self.finish(c.event_id or "", results)
            if on_done is not None:
                on_done(c)

        collector.on_result = result
        collector.on_done = done

    def finish(self, event_id: str, results: list[Any]) -> None:
        text = _json(results)
        self.finished[event_id] = (text, self.clock.seconds())
        self._schedule()
        for waiting in self.open.pop(event_id, []):
            _deliver(waiting, json.loads(text))

    # -- committing ------------------------------------------------------------------------------
    def synced(self) -> defer.Deferred[None]:
        """Fires once everything accepted so far is committed."""
        if not self.inserts and not self.finished:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self.synced_waiters.append(d)
        return d

    def _schedule(self) -> None:
        if self.flush_call is None:
            self.flush_call = self.clock.callLater(self.interval, self.flush)

    def flush(self) -> None:
        self.flush_call = None
        if self.committing is not None:  # one commit at a time; this batch goes next
            return
        inserts, finished, waiters, keys = self.inserts, self.finished, self.synced_waiters, self.keys
        self.inserts, self.finished, self.synced_waiters, self.keys = {}, {}, [], {}
        for event_id, row in inserts.items():
            done = finished.pop(event_id, None)
            row.extend(done if done is not None else (None, None))
        updates = [(text, at, event_id) for event_id, (text, at) in finished.items()]
        prune_before = None
        if self.clock.seconds() - self.pruned_at > PRUNE_EVERY:
            self.pruned_at = self.clock.seconds()
            prune_before = self.pruned_at - self.retention
        self.committing = (inserts, finished, keys)
        if self.writer is None:
            try:
                _write(self.db, list(inserts.values()), updates, prune_before)
            except sqlite3.Error as e:
                self._failed(e, waiters)
            else:
                self._committed(waiters)
            return
        db, run = self.writer
        run(_write, db, list(inserts.values()), updates, prune_before).addCallbacks(
            lambda _: self._committed(waiters), lambda f: self._failed(f.value, waiters)
        )

    def _committed(self, waiters: list[defer.Deferred[None]]) -> None:
        self.committing = None
        self.commits += 1
        for d in waiters:
            d.callback(None)
        if self.inserts or self.finished:
            self._schedule()

    def _failed(self, error: BaseException, waiters: list[defer.Deferred[None]]) -> None:
        self.committing = None
        self.failures += 1
        log.error("journal commit failed: {e}", e=error)
        for d in waiters:
            d.errback(error)
        if self.inserts or self.finished:
            self._schedule()

    def prune(self) -> int:
        """Remove finished rows past the retention now (commits do it once a minute)."""
        self.pruned_at = now = self.clock.seconds()
        with self.db:
            gone = self.db.execute("DELETE FROM journal WHERE done_at < ?", (now - self.retention,)).rowcount
        return int(gone)

    # -- after a restart -------------------------------------------------------------------------
    def recover(self, pipeline: Pipeline) -> int:
        """Run again the events of *pipeline* accepted but never finished; how many."""
        rows = self.db.execute(
            "SELECT id, input FROM journal WHERE pipeline=? AND result IS NULL ORDER BY accepted_at",
            (modulize(pipeline.name),),
        ).fetchall()
        rows = [row for row in rows if row[0] not in self.open]  # not those running now (another version)
        if not rows:
            return 0
        log.info("pipeline {name}: running {n} journaled events again", name=pipeline.name, n=len(rows))
        for event_id, _ in rows:
            self.open.setdefault(event_id, [])
        source = iter(rows)
        state = {"open": 0}

        def pump(_: Any = None) -> None:
            while state["open"] < RECOVERY_WINDOW and pipeline.running:
                row = next(source, None)
                if row is None:
                    return
                state["open"] += 1
                collector = Collector()
                collector.event_id = row[0]
                collector.on_done = released
                pipeline.inject(collector, json.loads(row[1]), pipeline.default_timeout)

        def released(_: Collector) -> None:
            state["open"] -= 1
            self.clock.callLater(0, pump)

        pump()
        return len(rows)

    # -- queries ---------------------------------------------------------------------------------
    def lookup(self, ids: list[str]) -> list[dict[str, Any]]:
        out = []
        for event_id in ids[:MAX_LOOKUP]:
            out.append(self.event(event_id))
        return out

    def event(self, event_id: str) -> dict[str, Any]:
        text = self._uncommitted_result(event_id)
        if text is not None:
            return {"id": event_id, "state": "done", "result": _value(json.loads(text))}
        committing = self.committing is not None and event_id in self.committing[0]
        if event_id in self.inserts or committing or event_id in self.open:
            return {"id": event_id, "state": "running"}
        row = self.db.execute(
            "SELECT pipeline, key, result, accepted_at, done_at FROM journal WHERE id=?", (event_id,)
        ).fetchone()
        if row is None:
            return {"id": event_id, "state": "unknown"}
        state = "running" if event_id in self.open else "done" if row[2] is not None else "accepted"
        body: dict[str, Any] = {"id": event_id, "state": state, "accepted_at": row[3]}
        if row[1] is not None:
            body["key"] = row[1]
        if row[2] is not None:
            body["result"], body["done_at"] = _value(json.loads(row[2])), row[4]
        return body

    def summary(self, pipeline: str) -> dict[str, int]:
        where = modulize(pipeline)
        done, waiting = self.db.execute(
            "SELECT COUNT(result), COUNT(*) - COUNT(result) FROM journal WHERE pipeline=?", (where,)
        ).fetchone()
        return {"done": int(done), "open": int(waiting), "uncommitted": len(self.inserts)}


def _write(
    db: sqlite3.Connection, inserts: list[list[Any]], updates: list[tuple[str, float, str]],
    prune_before: float | None,
) -> None:
    """One group commit (run in the writer's thread when there is one)."""
    with db:
        db.execute("BEGIN")
        db.executemany(
            "INSERT OR IGNORE INTO journal(id, pipeline, key, input, accepted_at, result, done_at)"
            " VALUES (?,?,?,?,?,?,?)",
            inserts,
        )
        db.executemany("UPDATE journal SET result=?, done_at=? WHERE id=? AND result IS NULL", updates)
        if prune_before is not None:
            db.execute("DELETE FROM journal WHERE done_at < ?", (prune_before,))


def _deliver(collector: Collector, results: list[Any]) -> None:
    for value in results:
        collector.result(value, alive=True)
    collector.finish()


def _value(results: list[Any]) -> Any:
    """As ``call`` answers: one result, a list of several, ``None`` for none."""
    return None if not results else results[0] if len(results) == 1 else results

