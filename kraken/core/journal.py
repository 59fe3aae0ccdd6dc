"""Durable work queues: tasks kept in one SQLite file, retried with capped backoff until done.

A :class:`Journal` is one file (``journal.sqlite`` in a server's state directory) holding the
tasks of every :class:`DurableQueue` of that server. :meth:`DurableQueue.add` commits the task
(WAL, ``synchronous=FULL``, see :mod:`kraken.core.sqlitedb`) before it returns, so work
acknowledged to a client after ``add`` survives kill -9. A task is a *key* (one pending task
per key: adding it again replaces its payload, the newest wins) and a JSON *payload* handed to
the queue's worker.

The worker returns a Deferred: a result (a short label counted in ``queue_done_total``) ends
the task and deletes its row; a failure counts in ``queue_failures_total`` and the task is tried
again after ``retry_first``, doubling up to ``retry_cap`` seconds, for as long as it takes (no
give-up). Workers must be idempotent: a task cut off by a crash runs again at the next start
(:meth:`DurableQueue.resume`). At most ``concurrency`` tasks of a queue run at once.

Every queue shows ``queue_depth``, ``queue_oldest_age_seconds``, ``queue_failures_total`` and
``queue_done_total`` (label ``queue``) in the server's ``/metrics``; ``kraken queues FILE``
reads the same file from outside.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.core.metrics import Metrics
from kraken.core.sqlitedb import DamagedDatabase, open_durable

log = Logger(namespace="kraken.core.journal")

JOURNAL_FILE = "journal.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    queue TEXT NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    generation INTEGER NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (queue, key)
)
"""

Worker = Callable[[dict[str, Any]], "Deferred[Any]"]


def backoff(attempt: int, first: float, cap: float) -> float:
    """Seconds to wait after the *attempt*-th failure (1-based): first, 2*first, 4*first ... at most cap."""
    return min(cap, first * 2 ** min(attempt - 1, 62))


@dataclass
class Task:
    key: str
    payload: dict[str, Any]
    generation: int
    created: float
    attempts: int = 0
    last_error: str = ""
    running: bool = False
    call: IDelayedCall | None = field(default=None, repr=False)


@dataclass(frozen=True)
class QueueRow:
    """One task as stored (what ``kraken queues`` lists)."""

    queue: str
    key: str
    payload: dict[str, Any]
    created: float
    attempts: int
    last_error: str


class Journal:
    """One durable SQLite file holding the tasks of several queues (``":memory:"`` for tests)."""

    def __init__(self, path: str | Path, clock: IReactorTime, metrics: Metrics | None = None) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.db = open_durable(self.path, isolation_level=None)
        self.db.execute(SCHEMA)
        self.queues: dict[str, DurableQueue] = {}
        if metrics is not None:
            metrics.registry.register(_QueueCollector(self, metrics.prefix))

    def queue(
        self,
        name: str,
        worker: Worker,
        retry_first: float = 1.0,
        retry_cap: float = 300.0,
        concurrency: int = 8,
        group: Callable[[dict[str, Any]], str] | None = None,
    ) -> DurableQueue:
        if name in self.queues:
            raise ValueError(f"queue {name!r} exists already in {self.path}")
        q = DurableQueue(self, name, worker, retry_first, retry_cap, concurrency, group)
        self.queues[name] = q
        return q

    def close(self) -> None:
        for q in self.queues.values():
            q.stop()
        self.db.close()


def open_journal(path: str | Path, clock: IReactorTime, metrics: Metrics, server: str) -> Journal:
    """A server's journal; a damaged file stops the server with one line naming it."""
    try:
        return Journal(path, clock, metrics)
    except DamagedDatabase as e:
        raise SystemExit(f"{server}: {e}") from None


class DurableQueue:
    """The tasks of one queue: rows in the journal, timers and running attempts in memory."""

    def __init__(
        self,
        journal: Journal,
        name: str,
        worker: Worker,
        retry_first: float,
        retry_cap: float,
        concurrency: int,
        group: Callable[[dict[str, Any]], str] | None,
    ) -> None:
        self.journal = journal
        self.db = journal.db
        self.clock = journal.clock
        self.name = name
        self.worker = worker
        self.retry_first = retry_first
        self.retry_cap = retry_cap
        self.concurrency = max(1, concurrency)
        self.group = group
        self.tasks: dict[str, Task] = {}
        self.ready: deque[str] = deque()
        self.queued: set[str] = set()  # the keys in ready
        self.pumping = False
        self.running = 0
        self.stopped = False
        self.groups: Counter[str] = Counter()
        self.failures = 0
        self.done: Counter[str] = Counter()
        self.on_done: list[Callable[[str, dict[str, Any], str], None]] = []

    # -- what is pending ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tasks)

    def __contains__(self, key: str) -> bool:
        return key in self.tasks

    def holds_group(self, group: str) -> bool:
        """Whether a pending task's payload falls in *group* (see ``group`` of :meth:`Journal.queue`)."""
        return self.groups[group] > 0

    def payloads(self) -> list[dict[str, Any]]:
        return [t.payload for t in self.tasks.values()]

    def oldest_age(self) -> float:
        if not self.tasks:
            return 0.0
        return max(0.0, self.clock.seconds() - min(t.created for t in self.tasks.values()))

    # -- adding and resuming -------------------------------------------------------------------
    def add(self, key: str, payload: dict[str, Any]) -> None:
        """Commit the task durably, then run it (at once, or after the attempt now running)."""
        self.add_many([(key, payload)])

    def add_many(self, entries: Iterable[tuple[str, dict[str, Any]]], delay: float = 0.0) -> None:
        """Several tasks in one durable commit; their first attempt *delay* seconds from now."""
        now = self.clock.seconds()
        added = []
        with _Transaction(self.db):
            for key, payload in entries:
                task = self.tasks.get(key)
                if task is None:
                    task = Task(key, payload, 1, now)
                    self.db.execute(
                        "INSERT INTO tasks (queue, key, payload, generation, created) VALUES (?, ?, ?, ?, ?) "
                        "ON CONFLICT (queue, key) DO UPDATE SET payload = excluded.payload, "
                        "generation = generation + 1",
                        (self.name, key, json.dumps(payload), 1, now),
                    )
                else:
                    self._ungroup(task)
                    task.payload, task.generation = payload, task.generation + 1
                    self.db.execute(
                        "UPDATE tasks SET payload = ?, generation = ? WHERE queue = ? AND key = ?",
                        (json.dumps(payload), task.generation, self.name, key),
                    )
                added.append(task)
        for task in added:
            if task.key not in self.tasks:
                self.tasks[task.key] = task
            self._group(task)
            task.attempts = 0
            if task.call is not None and task.call.active():
                task.call.cancel()
            task.call = None
            if task.running:
                continue
            if delay > 0 and not self.stopped:
                task.call = self.clock.callLater(delay, self._make_ready, task)
            else:
                self._make_ready(task)

    def resume(self, accept: Callable[[dict[str, Any]], bool] | None = None) -> int:
        """Load and start the tasks a previous run left; rows *accept* refuses stay waiting. How many."""
        self.stopped = False
        started = 0
        rows = self.db.execute(
            "SELECT key, payload, generation, created, attempts, last_error FROM tasks WHERE queue = ? "
            "ORDER BY created", (self.name,),
        ).fetchall()
        for key, raw, generation, created, attempts, last_error in rows:
            if key in self.tasks:
                continue
            try:
                payload = json.loads(raw)
                if not isinstance(payload, dict):
                    raise ValueError("payload is not an object")
            except ValueError as e:
                log.error("journal {path}: task {key!r} of queue {queue} is unreadable ({e}); removed",
                          path=self.journal.path, key=key, queue=self.name, e=e)
                self.db.execute("DELETE FROM tasks WHERE queue = ? AND key = ?", (self.name, key))
                continue
            if accept is not None and not accept(payload):
                continue
            task = Task(key, payload, generation, created, attempts, last_error)
            self.tasks[key] = task
            self._group(task)
            self._make_ready(task)
            started += 1
        if started:
            log.info("queue {queue}: resumed {n} pending tasks", queue=self.name, n=started)
        return started

    def remove(self, key: str) -> bool:
        """Forget a pending task whose work is no longer wanted (committed on return); a running
        attempt's result is then ignored. ``False`` when there was none."""
        task = self.tasks.pop(key, None)
        if task is None:
            return False
        with _Transaction(self.db):
            self.db.execute("DELETE FROM tasks WHERE queue = ? AND key = ?", (self.name, key))
        if task.call is not None and task.call.active():
            task.call.cancel()
        task.call = None
        self.queued.discard(key)
        self._ungroup(task)
        return True

    def stop(self) -> None:
        """Stop starting attempts (rows stay for the next start; running attempts end unrecorded)."""
        self.stopped = True
        for task in self.tasks.values():
            if task.call is not None and task.call.active():
                task.call.cancel()
            task.call = None
        self.ready.clear()
        self.queued.clear()

    def retry_now(self) -> int:
        """Run every waiting task at once (an operator's nudge after fixing a backend); how many."""
        woken = 0
        for task in list(self.tasks.values()):
            if task.call is not None and task.call.active():
                task.call.cancel()
                task.call = None
                self._make_ready(task)
                woken += 1
        return woken

    # -- running -----------------------------------------------------------------------------
    def _group(self, task: Task) -> None:
        if self.group is not None:
            self.groups[self.group(task.payload)] += 1

    def _ungroup(self, task: Task) -> None:
        if self.group is not None:
            g = self.group(task.payload)
            self.groups[g] -= 1
            if self.groups[g] <= 0:
                del self.groups[g]

    def _make_ready(self, task: Task) -> None:
        if self.stopped or task.key in self.queued:
            return
        self.ready.append(task.key)
        self.queued.add(task.key)
        self._pump()

    def _pump(self) -> None:
        if self.pumping:  # an attempt that finished at once: the loop below goes on
            return
        self.pumping = True
        try:
            while self.ready and self.running < self.concurrency and not self.stopped:
                key = self.ready.popleft()
                self.queued.discard(key)
                task = self.tasks.get(key)
                if task is None or task.running:
                    continue
                task.call = None
                task.running = True
                self.running += 1
                generation = task.generation
                d = maybeDeferred(self.worker, task.payload)
                d.addCallbacks(self._succeeded, self._failed, callbackArgs=(task, generation),
                               errbackArgs=(task, generation))
        finally:
            self.pumping = False

    def _finish_attempt(self, task: Task) -> None:
        task.running = False
        self.running -= 1
        self._pump()

    def _succeeded(self, result: Any, task: Task, generation: int) -> None:
        self._finish_attempt(task)
        label = result if isinstance(result, str) else "ok"
        self.done[label] += 1
        if self.tasks.get(task.key) is not task:
            return
        if task.generation != generation:  # replaced while it ran: run the newer payload
            self._make_ready(task)
            return
        with _Transaction(self.db):
            self.db.execute("DELETE FROM tasks WHERE queue = ? AND key = ? AND generation = ?",
                            (self.name, task.key, generation))
        del self.tasks[task.key]
        self._ungroup(task)
        for callback in self.on_done:
            callback(task.key, task.payload, label)

    def _failed(self, failure: Failure, task: Task, generation: int) -> None:
        self._finish_attempt(task)
        self.failures += 1
        if self.tasks.get(task.key) is not task:
            return
        if task.generation != generation:
            self._make_ready(task)
            return
        task.attempts += 1
        task.last_error = failure.getErrorMessage()[:500]
        delay = backoff(task.attempts, self.retry_first, self.retry_cap)
        with _Transaction(self.db):
            self.db.execute("UPDATE tasks SET attempts = ?, last_error = ? WHERE queue = ? AND key = ?",
                            (task.attempts, task.last_error, self.name, task.key))
        log.warn("queue {queue}: {key} failed (attempt {n}), retrying in {delay}s: {error}", queue=self.name,
                 key=task.key, n=task.attempts, delay=delay, error=task.last_error)
        if not self.stopped:
            task.call = self.clock.callLater(delay, self._make_ready, task)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on an exception) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        self.db.execute("ROLLBACK" if kind is not None else "COMMIT")


class _QueueCollector:
    """``/metrics`` families of every queue in a journal, computed at scrape time."""

    def __init__(self, journal: Journal, prefix: str) -> None:
        self.journal = journal
        self.prefix = prefix

    def collect(self) -> Iterator[Any]:
        p = self.prefix
        depth = GaugeMetricFamily(p + "queue_depth", "tasks pending in a durable queue", labels=["queue"])
        age = GaugeMetricFamily(p + "queue_oldest_age_seconds", "age of the oldest pending task",
                                labels=["queue"])
        failures = CounterMetricFamily(p + "queue_failures", "failed attempts of durable-queue tasks",
                                       labels=["queue"])
        done = CounterMetricFamily(p + "queue_done", "durable-queue tasks finished, by result",
                                   labels=["queue", "result"])
        for name, q in sorted(self.journal.queues.items()):
            depth.add_metric([name], len(q))
            age.add_metric([name], q.oldest_age())
            failures.add_metric([name], q.failures)
            for result, n in sorted(q.done.items()):
                done.add_metric([name, result], n)
        yield from (depth, age, failures, done)


def read_rows(path: str | Path) -> list[QueueRow]:
    """Every task in the journal file at *path*, oldest first (read-only; the server may be running)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no journal at {path}")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT queue, key, payload, created, attempts, last_error FROM tasks "
                          "ORDER BY queue, created").fetchall()
    finally:
        db.close()
    out = []
    for queue, key, raw, created, attempts, last_error in rows:
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = {"unreadable": raw[:200]}
        out.append(QueueRow(queue, key, payload if isinstance(payload, dict) else {}, created, attempts,
                            last_error))
    return out


def import_markers(
    directory: Path,
    queue: DurableQueue,
    task_of: Callable[[dict[str, Any], Path], list[tuple[str, dict[str, Any]]]],
    on_corrupt: Callable[[], None] | None = None,
) -> int:
    """Move the one-file-per-task markers of earlier versions (``*.json``) into *queue*.

    The tasks are committed before the files go; an unreadable file is set aside as ``.bad``.
    """
    if not directory.is_dir():
        return 0
    entries, files = [], []
    for path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(path.read_bytes())
            if not isinstance(record, dict):
                raise ValueError("not an object")
            entries.extend(task_of(record, path))
        except (OSError, ValueError, KeyError, TypeError) as e:
            aside = path.with_suffix(".bad")
            os.replace(path, aside)
            if on_corrupt is not None:
                on_corrupt()
            log.error("unreadable pending-task marker moved to {aside}: {e}", aside=str(aside), e=e)
            continue
        files.append(path)
    if entries:
        queue.add_many(entries)
    for path in files:
        path.unlink(missing_ok=True)
    if files:
        log.info("queue {queue}: took {n} pending tasks over from {dir}", queue=queue.name, n=len(entries),
                 dir=str(directory))
    return len(entries)
