"""The durable queue on a Clock: backoff without give-up, newest payload wins, kill -9, metrics, limits."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from kraken.core.journal import Journal, backoff, import_markers, read_rows
from kraken.core.metrics import Metrics


class Worker:
    """Fails the next ``failures`` calls, then succeeds; or holds every call open with ``hold``."""

    def __init__(self, failures: int = 0, hold: bool = False) -> None:
        self.failures = failures
        self.hold = hold
        self.calls: list[dict[str, Any]] = []
        self.open: list[Deferred[Any]] = []

    def __call__(self, payload: dict[str, Any]) -> Deferred[Any]:
        self.calls.append(payload)
        if self.hold:
            d: Deferred[Any] = Deferred()
            self.open.append(d)
            return d
        if self.failures > 0:
            self.failures -= 1
            return fail(ConnectionRefusedError("down"))
        return succeed("ok")


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(metrics.prefix + name, labels) or 0.0


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, 1.0, 8.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff(10_000, 0.5, 60.0) == 60.0


def test_a_failing_task_retries_at_the_cap_forever_then_lands(tmp_path: Path) -> None:
    clock, metrics, worker = Clock(), Metrics("j1"), Worker(failures=40)
    journal = Journal(tmp_path / "j.sqlite", clock, metrics)
    q = journal.queue("copies", worker, retry_first=1.0, retry_cap=4.0)
    q.add("k", {"n": 1})
    assert len(worker.calls) == 1 and "k" in q
    for wait in (1.0, 2.0, 4.0, 4.0):
        clock.advance(wait - 0.01)
        calls = len(worker.calls)
        clock.advance(0.01)
        assert len(worker.calls) == calls + 1
    clock.pump([4.0] * 40)  # long past any "give up after N" a queue might have had
    assert len(worker.calls) == 41 and "k" not in q
    assert read_rows(tmp_path / "j.sqlite") == []
    assert _sample(metrics, "queue_failures_total", queue="copies") == 40
    assert _sample(metrics, "queue_done_total", queue="copies", result="ok") == 1
    assert not clock.getDelayedCalls()


def test_depth_and_oldest_age_in_metrics_and_rows_on_disk(tmp_path: Path) -> None:
    clock, metrics = Clock(), Metrics("j2")
    journal = Journal(tmp_path / "j.sqlite", clock, metrics)
    q = journal.queue("wb", Worker(failures=10**6), retry_first=1.0, retry_cap=2.0)
    clock.advance(100)
    q.add("a", {"x": 1})
    clock.advance(30)
    q.add("b", {"x": 2})
    clock.advance(5)
    assert _sample(metrics, "queue_depth", queue="wb") == 2
    assert _sample(metrics, "queue_oldest_age_seconds", queue="wb") == 35
    rows = read_rows(tmp_path / "j.sqlite")
    assert [(r.key, r.payload) for r in rows] == [("a", {"x": 1}), ("b", {"x": 2})]
    assert all(r.attempts >= 1 and "down" in r.last_error for r in rows)


def test_tasks_survive_a_restart_and_resume_only_what_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    first = Journal(path, Clock())
    q = first.queue("t", Worker(failures=10**6))
    q.add_many([("a", {"to": "kept"}), ("b", {"to": "gone"})])
    first.close()  # as a crash leaves it: rows stay
    worker = Worker()
    second = Journal(path, Clock())
    q2 = second.queue("t", worker)
    assert q2.resume(lambda p: p["to"] == "kept") == 1
    assert worker.calls == [{"to": "kept"}]
    assert [r.key for r in read_rows(path)] == ["b"]  # waits for a later start that accepts it


def test_a_newer_payload_replaces_a_pending_one_and_reruns_after_a_running_attempt() -> None:
    clock, worker = Clock(), Worker(hold=True)
    q = Journal(":memory:", clock).queue("tags", worker)
    q.add("repo:v1", {"digest": "old"})
    q.add("repo:v1", {"digest": "new"})  # while the first attempt runs
    assert worker.calls == [{"digest": "old"}]
    worker.open.pop(0).callback(None)  # the old one landed: not done, the new one goes next
    assert worker.calls == [{"digest": "old"}, {"digest": "new"}] and "repo:v1" in q
    worker.open.pop(0).callback(None)
    assert "repo:v1" not in q


def test_at_most_concurrency_attempts_run_at_once() -> None:
    worker = Worker(hold=True)
    q = Journal(":memory:", Clock()).queue("c", worker, concurrency=2)
    q.add_many((str(i), {"i": i}) for i in range(5))
    assert len(worker.open) == 2
    worker.open.pop(0).callback(None)
    assert len(worker.open) == 2 and len(worker.calls) == 3
    while worker.open:
        worker.open.pop(0).callback(None)
    assert len(worker.calls) == 5 and len(q) == 0


def test_stop_keeps_rows_and_retry_now_wakes_waiting_tasks(tmp_path: Path) -> None:
    clock, worker = Clock(), Worker(failures=1)
    q = Journal(tmp_path / "j.sqlite", clock).queue("r", worker, retry_first=60.0)
    q.add("a", {})
    assert q.retry_now() == 1 and len(q) == 0
    worker.failures = 1
    q.add("b", {})
    q.stop()
    assert not clock.getDelayedCalls() and [r.key for r in read_rows(tmp_path / "j.sqlite")] == ["b"]


def test_garbled_rows_are_dropped_with_a_log_and_legacy_markers_are_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    Journal(path, Clock()).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO tasks (queue, key, payload, generation, created) "
                   "VALUES ('m', 'x', '{no', 1, 0)")
    markers = tmp_path / "old"
    markers.mkdir()
    (markers / "a.json").write_text(json.dumps({"name": "a"}))
    (markers / "b.json").write_text("{garbled")
    worker = Worker(failures=10**6)
    q = Journal(path, Clock()).queue("m", worker)
    corrupt: list[None] = []
    assert import_markers(markers, q, lambda r, p: [(r["name"], r)], lambda: corrupt.append(None)) == 1
    assert q.resume() == 0  # 'a' runs already, 'x' unreadable
    assert [r.key for r in read_rows(path)] == ["a"] and corrupt == [None]
    assert sorted(p.name for p in markers.iterdir()) == ["b.bad"]


CHILD = """
import sys
from twisted.internet.task import Clock
from kraken.core.journal import Journal
from twisted.internet.defer import Deferred
q = Journal(sys.argv[1], Clock()).queue("wb", lambda p: Deferred())
q.add("acknowledged", {"n": 1})
print("added", flush=True)
sys.stdin.read()
"""


def test_an_added_task_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "added"
    finally:
        child.kill()
        child.wait()
    worker = Worker()
    assert Journal(path, Clock()).queue("wb", worker).resume() == 1
    assert worker.calls == [{"n": 1}]


def test_kraken_queues_lists_depth_age_and_tasks(tmp_path: Path, capsys: Any) -> None:
    from kraken.cli.main import main as kraken_cli

    path = tmp_path / "journal.sqlite"
    journal = Journal(path, Clock())
    journal.queue("writeback", Worker(failures=10**6)).add("abc/team", {"digest": "sha256:abc"})
    journal.queue("replication", Worker(hold=True)).add("abc>o2:1", {"owner": "o2:1"})
    assert kraken_cli(["queues", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("replication: 1 pending, oldest ") and out[0].endswith("most attempts 0")
    assert out[2].startswith("writeback: 1 pending") and out[2].endswith("most attempts 1")
    assert "abc/team" in out[3] and "1 failed attempts  last error: " in out[3] and "down" in out[3]
    assert kraken_cli(["queues", str(path), "--json", "--queue", "writeback"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["key"] == "abc/team" and row["payload"] == {"digest": "sha256:abc"} and row["attempts"] == 1
    assert kraken_cli(["queues", str(tmp_path / "none.sqlite")]) == 1
    (tmp_path / "junk.sqlite").write_bytes(b"not a database" * 100)
    assert kraken_cli(["queues", str(tmp_path / "junk.sqlite")]) == 1
    assert "not a readable journal" in capsys.readouterr().err
