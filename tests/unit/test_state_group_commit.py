"""Group commit of the Cfg store: writes of one reactor turn share a commit, answers wait for it."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer

from kraken.core.http import HTTPError, Response
from kraken.state import model
from kraken.state.api import StateAPI
from kraken.state.events import EventBus
from kraken.state.groups import APPLY_PER_TURN, Group
from kraken.state.service import StateService
from kraken.state.store import SqliteCfg, StateStore, StoreWriteError

ME = "aaaaaaaa-0000-0000-0000-000000000001"


def node_id(i: int) -> str:
    return f"bbbbbbbb-0000-0000-0000-{i:012d}"


def stored_ids(db: Path) -> set[str]:
    with sqlite3.connect(str(db)) as other:  # another connection sees committed rows only
        return {row[0] for row in other.execute("SELECT id FROM cfg")}


def persisted(tmp_path: Path) -> tuple[StateStore, SqliteCfg, Clock, Path]:
    clock = Clock()
    store = StateStore(EventBus())
    db = tmp_path / "cfg.sqlite"
    persist = SqliteCfg(db, store, clock)
    persist.attach()
    return store, persist, clock, db


def fired(d: Any) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


def test_writes_of_one_turn_share_one_commit_and_their_waits_fire_after_it(tmp_path: Path) -> None:
    store, persist, clock, db = persisted(tmp_path)
    waits = []
    for i in range(5):
        store.create(model.Node(node_id(i)))
        waits.append(fired(persist.durable()))
    assert not any(waits) and stored_ids(db) == set() and persist.commits == 0
    clock.advance(0)
    assert all(w == [None] for w in waits)
    assert stored_ids(db) == {node_id(i) for i in range(5)} and persist.commits == 1

    store.delete(node_id(0))
    later = fired(persist.durable())
    assert not later and node_id(0) in stored_ids(db)
    clock.advance(0)
    assert later == [None] and node_id(0) not in stored_ids(db) and persist.commits == 2


def test_nothing_pending_is_durable_at_once(tmp_path: Path) -> None:
    store, persist, clock, _ = persisted(tmp_path)
    assert fired(persist.durable()) == [None]
    store.create(model.Node(node_id(1)))
    clock.advance(0)
    store.set_value(node_id(1), "/Arch", "")  # no change, nothing dirty
    assert fired(persist.durable()) == [None] and persist.commits == 1


def test_the_database_is_wal_with_full_sync(tmp_path: Path) -> None:
    _, persist, _, _ = persisted(tmp_path)
    assert persist.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert persist.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_cancelled_wait_does_not_break_the_commit(tmp_path: Path) -> None:
    store, persist, clock, db = persisted(tmp_path)
    store.create(model.Node(node_id(1)))
    gone, kept = persist.durable(), fired(persist.durable())
    gone.addErrback(lambda f: f.trap(CancelledError))
    gone.cancel()
    clock.advance(0)
    assert kept == [None] and stored_ids(db) == {node_id(1)}


def test_a_failed_commit_fails_the_waits_and_is_retried(tmp_path: Path) -> None:
    store, persist, clock, db = persisted(tmp_path)
    with sqlite3.connect(str(db)) as other:
        other.execute("DROP TABLE cfg")
    store.create(model.Node(node_id(1)))
    failed = fired(persist.durable())
    clock.advance(0)
    assert len(failed) == 1 and failed[0].check(StoreWriteError)
    with sqlite3.connect(str(db)) as other:
        other.execute("CREATE TABLE cfg (id TEXT PRIMARY KEY, node TEXT NOT NULL)")
    retried = fired(persist.durable())
    clock.advance(persist.retry_delay)
    assert retried == [None] and stored_ids(db) == {node_id(1)}


def test_close_commits_what_is_pending(tmp_path: Path) -> None:
    store, persist, _, db = persisted(tmp_path)
    store.create(model.Node(node_id(1)))
    waiting = fired(persist.durable())
    persist.close()
    assert waiting == [None] and stored_ids(db) == {node_id(1)}


def post(api: StateAPI, body: Any) -> Any:
    request = DummyRequest([b"cfg", b"node"])
    request.method = b"POST"
    request.content = io.BytesIO(json.dumps(body).encode())
    return api.create_node(request)


def test_rest_writes_are_answered_only_after_their_commit(tmp_path: Path) -> None:
    clock = Clock()
    state = StateService([], clock, self_id=ME, db=str(tmp_path / "cfg.sqlite"))
    clock.advance(0)
    api = StateAPI(state.store, state.engine, lambda: None, state.durable)
    answers = [fired(post(api, {"id": node_id(i)})) for i in range(3)]
    assert not any(answers) and stored_ids(tmp_path / "cfg.sqlite") == {ME}
    commits = state.persist.commits if state.persist else 0
    clock.advance(0)
    assert all(isinstance(a[0], Response) and a[0].status == 201 for a in answers)
    assert state.persist is not None and state.persist.commits == commits + 1
    assert stored_ids(tmp_path / "cfg.sqlite") == {ME} | {node_id(i) for i in range(3)}


def test_a_bulk_set_is_answered_once_every_member_is_written_and_committed(tmp_path: Path) -> None:
    clock = Clock()
    db = tmp_path / "cfg.sqlite"
    state = StateService([], clock, self_id=ME, db=str(db))
    members = [node_id(i) for i in range(APPLY_PER_TURN + 5)]  # more than one turn's slice
    for member in members:
        state.store.create(model.Node(member))
    state.groups.put(Group("hall", members))
    clock.advance(0)
    api = StateAPI(state.store, state.engine, lambda: None, state.durable, groups=state.groups)
    request = DummyRequest([b"group", b"hall", b"set"])
    request.method = b"POST"
    request.content = io.BytesIO(json.dumps({"values": {"arch": "aarch64"}}).encode())
    answered = api.group_set(request, "hall")
    committed_then: list[set[str]] = []

    def read_the_database(answer: Response) -> Response:
        with sqlite3.connect(str(db)) as other:
            rows = other.execute("SELECT node FROM cfg WHERE id != ?", (ME,))
            committed_then.append({json.loads(text)["arch"] for (text,) in rows})
        return answer

    answer = fired(answered.addCallback(read_the_database))
    assert not answer
    clock.advance(0)  # the last slice, then its commit
    assert isinstance(answer[0], Response) and answer[0].status == 202
    assert committed_then == [{"aarch64"}]  # when the 202 went out, every member was committed


def test_a_failed_commit_is_answered_503(tmp_path: Path) -> None:
    clock = Clock()
    db = tmp_path / "cfg.sqlite"
    state = StateService([], clock, self_id=ME, db=str(db))
    clock.advance(0)
    api = StateAPI(state.store, state.engine, lambda: None, state.durable)
    with sqlite3.connect(str(db)) as other:
        other.execute("DROP TABLE cfg")
    answer = fired(post(api, {"id": node_id(1)}))
    clock.advance(0)
    assert answer[0].check(HTTPError) and answer[0].value.status == 503
    assert answer[0].value.code == "STORE_WRITE_FAILED"


@implementer(IReactorThreads)
class ThreadedClock(Clock):
    """A Clock whose thread pool runs a job only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: list[Any] = []

    def getThreadPool(self) -> Any:
        return self

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        self.jobs.append((on_result, f, args, kwargs))

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)

    def run_job(self) -> None:
        on_result, f, args, kwargs = self.jobs.pop(0)
        try:
            result, ok = f(*args, **kwargs), True
        except Exception:
            result, ok = Failure(), False
        on_result(ok, result)


def test_commits_run_in_a_worker_one_at_a_time_and_writes_meanwhile_share_the_next(tmp_path: Path) -> None:
    clock = ThreadedClock()
    store = StateStore(EventBus())
    db = tmp_path / "cfg.sqlite"
    persist = SqliteCfg(db, store, clock)
    persist.attach()
    store.create(model.Node(node_id(1)))
    first = fired(persist.durable())
    clock.advance(0)
    assert len(clock.jobs) == 1 and not first  # the commit runs in the worker, the reactor goes on
    store.create(model.Node(node_id(2)))
    store.create(model.Node(node_id(3)))
    second = [fired(persist.durable()), fired(persist.durable())]
    clock.advance(0)
    assert len(clock.jobs) == 1, "never two commits at once"
    clock.run_job()
    assert first == [None] and not any(second) and stored_ids(db) == {node_id(1)}
    clock.advance(0)
    assert len(clock.jobs) == 1
    in_flight_only = fired(persist.durable())  # nothing dirty, but the commit in flight is not done
    assert not in_flight_only
    clock.run_job()
    assert second == [[None], [None]] and in_flight_only == [None] and persist.commits == 2
    assert stored_ids(db) == {node_id(i) for i in (1, 2, 3)}
    closing = fired(persist.close())
    assert closing == [None] and persist.closed and not clock.jobs
