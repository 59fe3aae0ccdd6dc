"""Persistence: SQLite state restored at boot (plug snapshots included), project folder on top."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet.task import Clock

from kraken.pipeline.app import PipelineApp, PipelineSection
from tests.unit.pipeline_fixtures import SIMPLE_MATH, done


def app(tmp_path: Path, **pipeline: Any) -> PipelineApp:
    section = PipelineSection(**{"database": str(tmp_path / "state.sqlite3"), **pipeline})
    return PipelineApp(section, Clock())


INNER = {"name": "inner", "components": [{"type": "stage", "transform": {"v": "args['x'] + 1"}}]}
OUTER = {
    "name": "outer",
    "components": [{"type": "plug", "pipeline": "inner", "transform": {"v": "args['v']"}}],
}


def test_restore_keeps_states_routes_and_plug_snapshots(tmp_path: Path) -> None:
    first = app(tmp_path)
    done(first.boot())
    done(first.services.define(SIMPLE_MATH))
    done(first.services.start("simple-math"))
    done(first.pipelines.define(INNER))
    done(first.pipelines.define(OUTER))
    done(first.pipelines.start("outer", sync=True))
    done(first.pipelines.define({**INNER, "components": [{"type": "stage", "transform": {"v": 0}}]}))
    first.routes.define({"o": "outer"})
    assert first.pipelines.runtime("outer").call({"x": 1}) == {"x": 1, "v": 2}
    first.store.close()

    second = app(tmp_path)
    done(second.boot())
    assert second.services.status("simple-math") == ":ready"
    assert second.pipelines.status("inner") == ":not_ready"
    assert second.pipelines.status("outer") == ":ready"
    assert second.pipelines.get("outer").options == {"sync": True, "telemetry": False}
    assert second.routes.resolve({"type": "o"}).call({"type": "o", "x": 1})["v"] == 2
    done(second.pipelines.delete("outer"))
    second.store.close()
    third = app(tmp_path)
    done(third.boot())
    assert third.pipelines.names() == ["inner"]


def test_project_folder_applies_over_stored_state(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    (folder / "services").mkdir(parents=True)
    (folder / "pipelines").mkdir()
    (folder / "services" / "math.json").write_text(json.dumps([SIMPLE_MATH]))
    (folder / "pipelines" / "p.json").write_text(
        json.dumps({"name": "p", "components": [{"transform": {"k": 1}}]})
    )
    (folder / "pipelines" / "broken.json").write_text(json.dumps({"name": "broken"}))
    (folder / "routes.json").write_text(json.dumps({"t": "p"}))
    first = app(tmp_path, project_dir=str(folder))
    done(first.boot())
    assert first.pipelines.runtime("p").call({}) == {"k": 1}
    assert first.pipelines.status("broken") == ":undefined"
    first.store.close()
    (folder / "pipelines" / "p.json").write_text(
        json.dumps({"name": "p", "components": [{"transform": {"k": 2}}]})
    )
    second = app(tmp_path, project_dir=str(folder))
    done(second.boot())
    assert second.routes.resolve({"type": "t"}).call({}) == {"k": 2}
