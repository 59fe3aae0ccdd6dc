"""The HTTP JSON API of kraken-pipeline (spec 2) through a real twistd process: exact bodies,
errors, NDJSON streams, spans, persistence across restarts, the project folder and TLS."""

from __future__ import annotations

import json
import ssl
import threading
import urllib.request
from pathlib import Path
from typing import Any

from tests.integration.pipeline_http import Http
from tests.support import REPO, ServerProcess, tls_section

SIMPLE_MATH = json.loads((REPO / "etc/pipeline-project/services/simple-math.json").read_text())
THE_PIPELINE = json.loads((REPO / "etc/pipeline-project/pipelines/the-pipeline.json").read_text())


def config(tmp_path: Path, **pipeline: Any) -> dict[str, Any]:
    return {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "pipeline": {
            "database": str(tmp_path / "db" / "pipeline.sqlite3"),
            "default_timeout": 5.0,
            **pipeline,
        },
    }


def math_ready(api: Http) -> None:
    api.ok("POST", "/services/define", SIMPLE_MATH)
    api.ok("POST", "/services/start/simple-math")
    api.ok("POST", "/pipelines/define", THE_PIPELINE)
    api.ok("POST", "/pipelines/start/the-pipeline")


def test_services_routes(servers: ServerProcess.Pool, tmp_path: Path) -> None:
    api = Http(servers.start("kraken-pipeline", config(tmp_path)).port("http"))
    assert api.get("/").raw == b"Hey! I'm Kraken!"
    assert api.post("/services/define", SIMPLE_MATH).json == {"ok": "simple-math"}
    another = {**SIMPLE_MATH, "name": "another"}
    assert api.post("/services/define", [another, SIMPLE_MATH]).json == {"ok": ["another", "simple-math"]}
    bad = api.post("/services/define", [{"client": {"module": "lambda"}, "interface": {}}])
    assert bad.status == 400 and "Missing service name!" in bad.json["error"]
    assert bad.json["details"]["field"] == "[0].name"
    broken = api.post("/services/define", raw=b"{not json")
    assert broken.status == 400 and "DecodeError" in broken.json["error"]
    assert api.ok("GET", "/services") == ["another", "simple-math"]
    assert api.ok("GET", "/services/status/simple-math") == {"status": ":not_ready"}
    assert api.ok("GET", "/services/status/nope") == {"status": ":undefined"}
    assert api.ok("GET", "/services/definition/simple_math") == SIMPLE_MATH
    assert api.get("/services/definition/nope").json == {"error": ":undefined"}
    assert api.get("/services/state/simple-math").json == {"error": ":not_ready"}
    assert api.post("/services/call/simple-math/add", {"a": 1, "b": 2}).json == {"error": ":not_ready"}
    assert api.ok("POST", "/services/start/simple-math") == {"ok": "SimpleMath"}
    assert api.post("/services/start/simple-math").json == {"error": ":already_started"}
    assert api.ok("GET", "/services/state/simple-math") == "SimpleMath"
    assert api.ok("POST", "/services/call/simple-math/add", {"a": 1, "b": 2}) == {"ok": {"sum": 3}}
    bad_args = api.post("/services/call/simple-math/add", {"a": 1, "b": "x"})
    assert bad_args.status == 400 and "Expected Number but got String" in bad_args.json["error"]
    assert bad_args.json["details"]["step"] == "input"
    assert api.ok("POST", "/services/restart/simple-math") == {"ok": "SimpleMath"}
    assert api.ok("GET", "/services/status/simple-math") == {"status": ":ready"}
    assert api.post("/services/restart/nope").json == {"error": ":undefined"}
    assert api.ok("POST", "/services/stop/simple-math") == {"ok": "ok"}
    assert api.post("/services/stop/simple-math").json == {"error": ":not_ready"}
    assert api.ok("POST", "/services/delete/another") == {"ok": "ok"}
    assert api.post("/services/delete/another").json == {"error": ":undefined"}


def test_pipelines_routes(servers: ServerProcess.Pool, tmp_path: Path) -> None:
    api = Http(servers.start("kraken-pipeline", config(tmp_path)).port("http"))
    api.ok("POST", "/services/define", SIMPLE_MATH)
    api.ok("POST", "/services/start/simple-math")
    assert api.ok("POST", "/pipelines/define", THE_PIPELINE) == {"ok": "the-pipeline"}
    assert api.ok("POST", "/pipelines/define", THE_PIPELINE) == {"ok": "the-pipeline"}
    no_name = api.post("/pipelines/define", {"components": []})
    assert no_name.status == 400 and "Pipeline must have name!" in no_name.json["error"]
    no_components = api.post("/pipelines/define", {"name": "x"})
    assert (
        "Missing 'components'!" in no_components.json["error"]
        and no_components.json["details"]["field"] == "components"
    )
    bad_field = api.post(
        "/pipelines/define", {"name": "x", "components": [{"type": "goto", "to": "nowhere"}]}
    )
    assert bad_field.status == 400 and bad_field.json["details"]["field"] == "components[0].to"
    deep = api.post(
        "/pipelines/define", raw=b'{"name": "d", "components": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    )
    assert deep.status == 400 and "nested too deeply" in deep.json["error"]
    nested: Any = {"type": "tbd"}
    for _ in range(60):
        nested = {"type": "switch", "condition": "true", "branches": {"true": [nested]}}
    too_deep = api.post("/pipelines/define", {"name": "d", "components": [nested]})
    assert too_deep.status == 400 and "nested deeper than" in too_deep.json["error"]
    assert api.ok("GET", "/pipelines") == ["the-pipeline"]
    for spelling in ("the-pipeline", "the_pipeline", "ThePipeline"):
        assert api.ok("GET", f"/pipelines/status/{spelling}") == {"status": ":not_ready"}
    assert api.post("/pipelines/call/the-pipeline", {"x": 1}).json == {"error": ":not_ready"}
    assert api.post("/pipelines/call/nope", {"x": 1}).json == {"error": ":undefined"}
    assert api.post("/pipelines/start/the-pipeline?sync=maybe").status == 400
    assert api.ok("POST", "/pipelines/start/the-pipeline", {"sync": True, "telemetry": True}) == {
        "ok": "Elixir.Kraken.Pipelines.ThePipeline"
    }
    assert api.post("/pipelines/start/the-pipeline").json == {"error": ":already_started"}
    assert api.ok("GET", "/pipelines/status/ThePipeline") == {"status": ":ready"}
    assert api.post("/pipelines/call/the-pipeline", {"x": 1, "y": 2}).raw == b'{"x":1,"y":2,"z":3}'
    assert api.ok("POST", "/pipelines/call/the-pipeline", [{"x": 1, "y": 2}, {"x": 3, "y": 4}]) == [
        {"x": 1, "y": 2, "z": 3},
        {"x": 3, "y": 4, "z": 7},
    ]
    error = api.ok("POST", "/pipelines/call/the-pipeline", {"x": 1, "y": "string"})
    assert error["type"] == "error_ip" and "Expected Number but got String" in error["error"]["message"]
    debug = api.ok("POST", "/pipelines/call/the-pipeline?debug=true", {"x": 1, "y": 2})
    assert debug["event"] == {"x": 1, "y": 2, "z": 3} and debug["type"] == "ip"
    streamed = api.post("/pipelines/stream/the-pipeline", [{"x": 1, "y": 2}, {"x": 3, "y": 4}])
    assert streamed.raw == b'{"x":1,"y":2,"z":3}\n{"x":3,"y":4,"z":7}\n'
    assert api.post("/pipelines/stream/the-pipeline", {"x": 1, "y": 2}).lines == [{"x": 1, "y": 2, "z": 3}]
    cast = api.ok("POST", "/pipelines/cast/the-pipeline", [{"x": 1, "y": 2}, {"x": 2, "y": 2}])
    assert len(cast["ok"]) == 2 and all(ref.startswith("0.") for ref in cast["ok"])
    assert api.ok("GET", "/pipelines/definition/the_pipeline") == THE_PIPELINE
    assert api.get("/pipelines/stats/the-pipeline").json["components"]["stage_1"]["calls"] >= 6
    assert api.ok("POST", "/pipelines/stop/the-pipeline") == {"ok": "ok"}
    assert api.post("/pipelines/stop/the-pipeline").json == {"error": ":not_ready"}
    assert api.ok("POST", "/pipelines/delete/the-pipeline") == {"ok": "ok"}
    assert api.post("/pipelines/delete/the-pipeline").json == {"error": ":undefined"}


def test_no_output_is_200_null_and_timeouts(servers: ServerProcess.Pool, tmp_path: Path) -> None:
    api = Http(servers.start("kraken-pipeline", config(tmp_path)).port("http"))
    api.ok("POST", "/pipelines/define", {"name": "drop", "components": [{"type": "dead-end"}]})
    api.ok(
        "POST",
        "/pipelines/define",
        {
            "name": "loop",
            "components": [
                {"type": "goto-point", "name": "a"},
                {"type": "stage", "transform": {"n": "args['n'] + 1"}},
                {"type": "goto", "to": "a"},
            ],
        },
    )
    for name in ("drop", "loop"):
        api.ok("POST", f"/pipelines/start/{name}")
    nothing = api.post("/pipelines/call/drop", {"x": 1})
    assert (nothing.status, nothing.raw) == (200, b"null")
    assert api.ok("POST", "/pipelines/call/drop", [{"x": 1}]) == []
    assert api.post("/pipelines/stream/drop", [{"x": 1}]).raw == b""
    timed_out = api.ok("POST", "/pipelines/call/loop?timeout=200", {"n": 0})
    assert timed_out["type"] == "error_ip" and timed_out["error"] == "timeout"
    assert api.post("/pipelines/call/loop?timeout=abc", {"n": 0}).status == 400
    assert api.get("/health").json == {"status": "ok"}
    metrics = api.get("/metrics").raw.decode()
    assert 'kraken_pipeline_events_total{mode="call",pipeline="drop"} 2.0' in metrics
    assert (
        'kraken_pipeline_component_calls_total{component="dead_end_1",pipeline="drop",type="dead_end"} 3.0'
        in metrics
    )
    assert 'kraken_pipeline_results_total{kind="timeout",pipeline="loop"} 1.0' in metrics


def test_type_routed_events(servers: ServerProcess.Pool, tmp_path: Path) -> None:
    api = Http(servers.start("kraken-pipeline", config(tmp_path)).port("http"))
    assert api.get("/routes").json == {"error": "Routes are not defined!"}
    math_ready(api)
    assert api.post("/call", {"type": "math", "x": 1, "y": 2}).json == {"error": ":no_routes"}
    assert api.post("/routes/define", raw=b"[oops").status == 400
    api.ok("POST", "/routes/define", {"math": "the-pipeline", "other": "missing"})
    assert api.ok("POST", "/call", {"type": "math", "x": 1, "y": 2}) == {
        "type": "math",
        "x": 1,
        "y": 2,
        "z": 3,
    }
    assert api.post("/call", {"type": "other"}).json == {"error": ":undefined"}
    many = api.ok(
        "POST",
        "/call",
        [{"type": "math", "x": 1, "y": 2}, {"x": 0}, {"y": 0}, {"type": "math", "x": 2, "y": 2}],
    )
    assert many.count(["error", "no_type"]) == 2 and {"type": "math", "x": 2, "y": 2, "z": 4} in many
    casts = api.ok("POST", "/cast", [{"type": "math", "x": 1, "y": 2}, {"x": 1}])
    assert casts["ok"][0].startswith("0.") and casts["ok"][1] == ["error", "no_type"]
    api.ok("POST", "/pipelines/stop/the-pipeline")
    assert api.post("/stream", [{"type": "math", "x": 1}, {"type": "math", "x": 2}]).raw == (
        b'["error","not_ready"]\n["error","not_ready"]\n'
    )


def test_live_span_stream(servers: ServerProcess.Pool, tmp_path: Path) -> None:
    proc = servers.start("kraken-pipeline", config(tmp_path))
    api = Http(proc.port("http"))
    math_ready(api)
    lines: list[Any] = []

    def watch() -> None:
        url = f"http://127.0.0.1:{proc.port('http')}/pipelines/spans/the-pipeline?limit=2"
        with urllib.request.urlopen(url, timeout=20) as resp:
            lines.extend(json.loads(line) for line in resp.read().splitlines())

    watcher = threading.Thread(target=watch)
    watcher.start()
    for _ in range(100):
        api.ok("POST", "/pipelines/call/the-pipeline", {"x": 1, "y": 2})
        if not watcher.is_alive():
            break
    watcher.join(20)
    assert len(lines) == 2
    assert lines[0]["component"] == "stage_1" and lines[0]["outcome"] == "ok" and lines[0]["duration_us"] >= 0


def test_definitions_survive_restart_and_project_folder_loads(
    servers: ServerProcess.Pool, tmp_path: Path
) -> None:
    proc = servers.start("kraken-pipeline", config(tmp_path), name="durable")
    api = Http(proc.port("http"))
    math_ready(api)
    api.ok("POST", "/pipelines/define", {**THE_PIPELINE, "name": "stopped-one"})
    api.ok("POST", "/routes/define", {"math": "the-pipeline"})
    proc.stop()
    proc.start()
    api = Http(proc.port("http"))
    assert api.ok("GET", "/pipelines/status/the-pipeline") == {"status": ":ready"}
    assert api.ok("GET", "/pipelines/status/stopped-one") == {"status": ":not_ready"}
    assert api.ok("POST", "/call", {"type": "math", "x": 2, "y": 2})["z"] == 4

    folder = servers.start(
        "kraken-pipeline",
        config(tmp_path / "b", project_dir=str(REPO / "etc/pipeline-project")),
        name="project",
    )
    api = Http(folder.port("http"))
    first = api.ok("POST", "/call", {"type": "hello", "name": "Anton"})
    assert first["message"] == "Hello, Anton!" and first["greeted"] == {"value": None}
    again = api.ok("POST", "/call", {"type": "hello", "name": "Anton"})
    assert again["message"] == "I've already said hello to you, Anton."


def test_mutual_tls_listener(servers: ServerProcess.Pool, tmp_path: Path, pki: Path) -> None:
    cfg = {
        **config(tmp_path),
        "listen": ["tls:tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "pipeline"),
    }
    proc = servers.start("kraken-pipeline", cfg)
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    with urllib.request.urlopen(
        f"https://127.0.0.1:{proc.port('http')}/pipelines", context=context, timeout=10
    ) as r:
        assert json.loads(r.read()) == []


def test_definitions_persist_by_default_under_the_state_dir(
    servers: ServerProcess.Pool, tmp_path: Path
) -> None:
    proc = servers.start("kraken-pipeline", {"listen": ["tcp:0:interface=127.0.0.1"]}, name="defaults")
    math_ready(Http(proc.port("http")))
    proc.stop()
    assert (proc.workdir / "run" / "pipeline" / "pipeline.sqlite3").exists()
    proc.start()
    assert Http(proc.port("http")).ok("GET", "/pipelines/status/the-pipeline") == {"status": ":ready"}
