"""Durable pipelines on a Clock: journaled events, group commits, idempotency keys,
recovery of unfinished events after a crash (a new Journal on the same file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer

from kraken.core.sqlitedb import open_durable
from kraken.pipeline.definitions.mapping import DefinitionError
from kraken.pipeline.journal import Journal
from kraken.pipeline.pipelines import PipelineRegistry
from tests.unit.pipeline_fixtures import World, done

SLOW = {
    "name": "p",
    "durable": {"key": "args['id']"},
    "components": [
        {
            "service": {"name": "slow-math", "function": "add_one"},
            "prepare": {"x": "args['x']", "delay": "args['delay']"},
            "transform": {"y": "args['result']"},
            "count": 64,
        },
    ],
}


def durable_world(path: Path) -> tuple[World, Journal]:
    world = World().math()
    journal = Journal(open_durable(path, isolation_level=None), world.clock)
    world.pipelines = PipelineRegistry(world.services, world.clock, 20.0, journal=journal)
    return world, journal


def test_journal_ids_results_duplicates_and_group_commits(tmp_path: Path) -> None:
    world, journal = durable_world(tmp_path / "j.sqlite3")
    rt = world.pipeline(SLOW)
    assert rt is not None
    ids = [rt.cast({"id": f"k{i}", "x": i, "delay": 1.0}) for i in range(50)]
    assert len(set(ids)) == 50 and journal.commits == 0
    synced = journal.synced()
    world.clock.advance(0.002)  # one commit for all fifty
    assert synced.called and journal.commits == 1
    assert journal.event(ids[0])["state"] == "running"
    done(world.pipelines.define_version({**SLOW, "helpers": []}))
    done(world.pipelines.start_version("p", 2))  # a durable version beside: it must not rerun them
    world.clock.advance(0)
    assert world.slow.peak == 50
    assert rt.cast({"id": "k3", "x": 99}) == ids[3]  # the same key: the same event, not run again
    world.clock.advance(1.0)
    world.clock.advance(0.002)
    assert journal.event(ids[3])["result"] == {"id": "k3", "x": 3, "delay": 1.0, "y": 4}
    again = rt.call({"id": "k3", "x": 99})  # a duplicate call answers the first result
    assert again == {"id": "k3", "x": 3, "delay": 1.0, "y": 4}
    assert journal.summary("p") == {"done": 50, "open": 0, "uncommitted": 0}
    assert journal.commits == 2


def test_an_asynchronous_call_is_journaled_when_it_ends(tmp_path: Path) -> None:
    world, journal = durable_world(tmp_path / "j.sqlite3")
    rt = world.pipeline(SLOW)
    assert rt is not None
    answer = rt.call({"id": "c1", "x": 1, "delay": 1.0})
    world.clock.advance(1.0)
    assert done(answer) == {"id": "c1", "x": 1, "delay": 1.0, "y": 2}
    world.clock.advance(0.002)
    assert journal.summary("p") == {"done": 1, "open": 0, "uncommitted": 0}


def test_unfinished_events_run_again_after_a_crash(tmp_path: Path) -> None:
    world, journal = durable_world(tmp_path / "j.sqlite3")
    rt = world.pipeline(SLOW)
    assert rt is not None
    ids = [rt.cast({"id": f"k{i}", "x": i, "delay": 1.0 if i % 2 else 5.0}) for i in range(10)]
    world.clock.advance(0.002)
    world.clock.advance(1.0)
    world.clock.advance(0.002)  # the odd ones finished, the even ones are in flight: crash now
    assert journal.summary("p") == {"done": 5, "open": 5, "uncommitted": 0}

    world2, journal2 = durable_world(tmp_path / "j.sqlite3")
    rt2 = world2.pipeline(SLOW)
    assert rt2 is not None
    world2.clock.advance(0)  # recovery starts
    assert rt2.cast({"id": "k0", "x": 0}) == ids[0]  # waits for the rerun, not run a third time
    world2.clock.advance(5.0)
    world2.clock.advance(0.002)
    results: dict[str, Any] = {i: journal2.event(i)["result"] for i in ids}
    assert [results[i]["y"] for i in ids] == [x + 1 for x in range(10)]
    assert journal2.summary("p") == {"done": 10, "open": 0, "uncommitted": 0}
    assert world2.slow.peak == 5  # only the unfinished five ran again


def test_durable_option_is_checked() -> None:
    world = World().math()
    for bad, field in (({"durable": "yes"}, "durable"), ({"durable": {"keys": 1}}, "durable.keys")):
        with pytest.raises(DefinitionError) as e:
            world.pipeline({"name": "p", "components": [], **bad})
        assert e.value.field == field
    done(world.pipelines.define({"name": "p", "components": [], "durable": True}))


def test_a_commit_under_way_elsewhere(tmp_path: Path) -> None:
    """With a writer, commits run elsewhere: meanwhile queries and keys see the batch, the next
    batch waits, and cast answers wait for their own commit."""
    world = World().math()
    path = tmp_path / "j.sqlite3"
    started: list[tuple[Any, tuple[Any, ...]]] = []
    pending: list[defer.Deferred[Any]] = []

    def run(f: Any, *args: Any) -> defer.Deferred[Any]:
        started.append((f, args))
        d: defer.Deferred[Any] = defer.Deferred()
        pending.append(d)
        return d

    def finish_commit() -> None:
        f, args = started.pop(0)
        f(*args)
        pending.pop(0).callback(None)

    journal = Journal(open_durable(path, isolation_level=None), world.clock,
                      writer=(open_durable(path, isolation_level=None), run))
    world.pipelines = PipelineRegistry(world.services, world.clock, 20.0, journal=journal)
    rt = world.pipeline({**SLOW, "components": [{"type": "stage", "transform": {"y": "args['x'] + 1"}}]})
    assert rt is not None
    first = rt.cast({"id": "a", "x": 1})
    synced = journal.synced()
    world.clock.advance(0.002)
    assert len(started) == 1 and not synced.called  # the commit is under way
    assert rt.cast({"id": "a", "x": 99}) == first  # its key is known before it is on disk
    assert journal.event(first)["result"] == {"id": "a", "x": 1, "y": 2}
    second = rt.cast({"id": "b", "x": 2})
    world.clock.advance(0.002)
    assert len(started) == 1  # one commit at a time
    finish_commit()
    assert synced.called and journal.commits == 1
    world.clock.advance(0.002)
    assert len(started) == 1
    finish_commit()
    assert journal.event(second)["state"] == "done"
    assert journal.event(second)["result"] == {"id": "b", "x": 2, "y": 3}
    assert journal.summary("p") == {"done": 2, "open": 0, "uncommitted": 0}
