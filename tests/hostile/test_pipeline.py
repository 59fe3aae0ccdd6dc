"""Hostile clients of kraken-pipeline (real processes): memory amplification through
expressions and mappings under an address-space cap, pathological JSON at every JSON
endpoint, results that are not JSON (NaN), tracebacks, and outbound calls outside the
allow-list. Every attack gets an answer and the server keeps serving."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.pipeline_http import Answer, Http
from tests.support import ServerProcess

MEMORY_CAP = 1536 * 1024 * 1024  # address space of the capped server (the issue used 3 GB)
MB = 'String.duplicate("a", 1000000)'
SIMPLE_MATH = {
    "name": "simple-math",
    "client": {"module": "octopus.lambda", "start": {"module": "SimpleMath"}},
    "interface": {
        "add": {"call": {"function": "add"}},
        "echo": {"prepare": {"value": "args['expr']"}, "call": {"function": "log"}},
    },
}

DOUBLE = {"l": "args", "r": "args"}  # the event twice: its size doubles on every turn


def config(tmp_path: Path, **pipeline: Any) -> dict[str, Any]:
    return {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "pipeline": {"persist": False, "default_timeout": 30.0, **pipeline},
    }


def start_capped(servers: ServerProcess.Pool, tmp_path: Path, **pipeline: Any) -> ServerProcess:
    """A pipeline server whose address space is capped with prlimit, as a container would."""
    proc = ServerProcess("kraken-pipeline", config(tmp_path, **pipeline), servers.root / "capped", [])
    proc.args = ["prlimit", f"--as={MEMORY_CAP}", "--", *proc.args]
    servers.started.append(proc)
    return proc.start()


def no_constants(name: str) -> Any:
    raise AssertionError(f"{name} in an answer: not JSON")


def strict_json(answer: Answer) -> Any:
    return json.loads(answer.raw, parse_constant=no_constants)


def expression_stage(name: str, expression: str) -> dict[str, Any]:
    return {"name": name, "components": [{"type": "stage", "transform": {"out": expression}}]}


AMPLIFICATIONS = {
    "inspect": f"byte_size(inspect(List.duplicate({MB}, 2500) ++ [args['n']]))",
    "to_string": f"to_string(List.duplicate({MB}, 2500)) <> args['s']",
    "result": f"[args['n'] | List.duplicate({MB}, 2500)]",
    "doubling": "Enum.reduce(1..64, [args['n']], fn _, acc -> [acc, acc] end)",
    "join": f"Enum.join(Enum.to_list(1..90000), {MB} <> args['s'])",
}


def test_amplification_under_a_memory_cap_is_answered(servers: ServerProcess.Pool, tmp_path: Path) -> None:
    server = start_capped(servers, tmp_path)
    api = Http(server.port("http"))
    assert api.ok("POST", "/services/define", SIMPLE_MATH) == {"ok": "simple-math"}
    api.ok("POST", "/services/start/simple-math")
    for name, expression in AMPLIFICATIONS.items():
        api.ok("POST", "/pipelines/define", expression_stage(name, expression))
        api.ok("POST", f"/pipelines/start/{name}")
        start = time.monotonic()
        event = strict_json(api.post(f"/pipelines/call/{name}", {"n": 1, "s": "x"}))
        assert time.monotonic() - start < 20, name
        assert event["type"] == "error_ip", (name, event)
        assert event["error"]["__struct__"] == "LimitError", (name, event)
        # the same expression in a service's prepare step: a 4xx answer naming the limit
        svc = {
            "name": f"svc-{name}",
            "client": {"module": "octopus.lambda", "start": {"module": "SimpleMath"}},
            "interface": {"f": {"prepare": {"x": expression}, "call": {"function": "log"}}},
        }
        api.ok("POST", "/services/define", svc)
        api.ok("POST", f"/services/start/svc-{name}")
        refused = api.post(f"/services/call/svc-{name}/f", {"n": 1, "s": "x"})
        assert refused.status == 400, (name, refused.status, refused.raw[:300])
        assert "LimitError" in strict_json(refused)["error"], name
    # a mapping that doubles the event on every turn of a goto loop
    looped = {
        "name": "looped",
        "components": [
            {"type": "goto-point", "name": "top"},
            {"type": "stage", "name": "double", "prepare": DOUBLE, "transform": {"y": "args"}},
            {"type": "goto", "name": "again", "to": "top"},
        ],
    }
    api.ok("POST", "/pipelines/define", looped)
    api.ok("POST", "/pipelines/start/looped")
    event = strict_json(api.post("/pipelines/call/looped", {"payload": "p" * 100_000}))
    assert event["error"]["__struct__"] == "LimitError"
    # the server is still up, serves ordinary calls and counted the refusals
    assert api.ok("POST", "/services/call/simple-math/add", {"a": 1, "b": 2}) == {"ok": {"sum": 3}}
    assert api.ok("GET", "/health")["status"] == "ok"
    metrics = api.get("/metrics").raw.decode()
    assert 'kraken_pipeline_refused_total{limit="value_bytes"}' in metrics
    assert server.proc is not None and server.proc.poll() is None
    # logged once per offender, not once per request
    for _ in range(3):
        api.post("/pipelines/call/doubling", {"n": 1, "s": "x"})
    assert server.log().count("limit value_bytes refused pipeline doubling") == 1


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_event(depth: int) -> bytes:
    return b'{"type": "t", "x": ' + nested(depth) + b"}"


HOSTILE_BODIES = {
    "nested 900": nested(900),
    "nested 100000": nested(100_000),
    "event nested 900": nested_event(900),
    "5000 digits": b"9" * 5000,
    "event with 5000 digits": b'{"type": "t", "x": ' + b"9" * 5000 + b"}",
    "NaN": b'{"type": "t", "x": NaN}',
    "Infinity": b'[{"type": "t", "x": -Infinity}]',
}
JSON_ENDPOINTS = [
    "/services/define",
    "/services/start/simple-math",
    "/services/stop/simple-math",
    "/services/restart/simple-math",
    "/services/call/simple-math/add",
    "/pipelines/define",
    "/pipelines/start/echo",
    "/pipelines/call/echo",
    "/pipelines/cast/echo",
    "/pipelines/stream/echo",
    "/routes/define",
    "/call",
    "/cast",
    "/stream",
]


def test_pathological_json_at_every_endpoint_is_400(servers: ServerProcess.Pool, tmp_path: Path) -> None:
    api = Http(servers.start("kraken-pipeline", config(tmp_path)).port("http"))
    api.ok("POST", "/services/define", SIMPLE_MATH)
    api.ok("POST", "/pipelines/define", {"name": "echo", "components": [{"type": "tbd"}]})
    api.ok("POST", "/pipelines/start/echo")
    api.ok("POST", "/routes/define", {"t": "echo"})
    for path in JSON_ENDPOINTS:
        for what, raw in HOSTILE_BODIES.items():
            answer = api.post(path, raw=raw)
            assert answer.status == 400, (path, what, answer.status, answer.raw[:300])
            assert "DecodeError" in strict_json(answer)["error"], (path, what)
    # a deep event that is accepted (within max_json_depth) still gets an answer
    assert api.post("/pipelines/call/echo", raw=nested_event(150)).status == 200
    assert api.ok("GET", "/health")["status"] == "ok"


def test_non_finite_results_are_written_as_null(servers: ServerProcess.Pool, tmp_path: Path) -> None:
    api = Http(servers.start("kraken-pipeline", config(tmp_path)).port("http"))
    api.ok("POST", "/services/define", SIMPLE_MATH)
    api.ok("POST", "/services/start/simple-math")
    huge = {"a": 1e308, "b": 1e308}  # their sum is infinite
    assert strict_json(api.post("/services/call/simple-math/add", huge)) == {"ok": {"sum": None}}
    add = {"name": "simple-math", "function": "add"}
    stage = {"type": "stage", "service": add, "transform": {"s": "args['sum']"}}
    api.ok("POST", "/pipelines/define", {"name": "adder", "components": [stage]})
    api.ok("POST", "/pipelines/start/adder")
    assert strict_json(api.post("/pipelines/call/adder", huge)) == {**huge, "s": None}
    streamed = api.post("/pipelines/stream/adder", [huge, huge]).raw.splitlines()
    lines = [json.loads(x, parse_constant=no_constants) for x in streamed]
    assert lines == [{**huge, "s": None}] * 2


def test_unexpected_errors_answer_with_an_error_id_not_a_traceback(
    servers: ServerProcess.Pool, tmp_path: Path
) -> None:
    server = servers.start("kraken-pipeline", config(tmp_path))
    api = Http(server.port("http"))
    api.ok("POST", "/services/define", SIMPLE_MATH)
    api.ok("POST", "/services/start/simple-math")
    # SimpleMath.add raises TypeError on a list: an unexpected error inside the client
    answer = api.post("/services/call/simple-math/add", {"a": [1], "b": 2})
    assert answer.status == 400
    body = strict_json(answer)
    assert "Traceback" not in answer.raw.decode() and 'File "' not in answer.raw.decode()
    error_id = body["details"]["error_id"]
    assert body["details"]["stacktrace"] == ""
    assert error_id in server.log() and "Traceback" in server.log()
    stage = {"type": "stage", "service": {"name": "simple-math", "function": "add"}}
    api.ok("POST", "/pipelines/define", {"name": "adder", "components": [stage]})
    api.ok("POST", "/pipelines/start/adder")
    event = strict_json(api.post("/pipelines/call/adder", {"a": [1], "b": 2}))
    assert event["type"] == "error_ip" and "Traceback" not in json.dumps(event)
    assert "error id" in event["error"]["message"]


def _listen_once(sock: socket.socket, seen: list[bytes]) -> None:
    try:
        conn, _ = sock.accept()
        seen.append(conn.recv(4096))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")
        conn.close()
    except OSError:
        pass


@pytest.fixture
def listener() -> Any:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(5)
    sock.settimeout(10)
    seen: list[bytes] = []
    thread = threading.Thread(target=_listen_once, args=(sock, seen), daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], seen
    finally:
        sock.close()
