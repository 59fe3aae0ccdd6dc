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
    metrics = api.get("/metrics").raw.decode()
    for limit in ("json_depth", "json_number", "json_constant"):
        assert f'kraken_pipeline_refused_total{{limit="{limit}"}}' in metrics
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


class Listener:
    """A raw TCP listener that records what reaches it and answers with *reply*."""

    def __init__(self, reply: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}") -> None:
        self.reply = reply
        self.seen: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    self.seen.append(conn.recv(65536))
                    conn.sendall(self.reply)
                except OSError:
                    pass

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


def loopback_name() -> str | None:
    """A host name other than localhost that resolves to a loopback address here, if any."""
    for name in (socket.gethostname(), "vm"):
        try:
            if name != "localhost" and socket.gethostbyname(name).startswith("127."):
                return name
        except OSError:
            continue
    return None


def http_service(name: str, base_url: str) -> dict[str, Any]:
    return {
        "name": name,
        "client": {"module": "http", "start": {"base_url": base_url, "timeout": 5}},
        "interface": {"get": {"prepare": {"method": "GET", "path": "args['path']"}}},
    }


def test_outbound_calls_need_the_allow_list(servers: ServerProcess.Pool, tmp_path: Path) -> None:
    forbidden = Listener()  # stands for the pub/sub admin port of the issue
    redirector = Listener(
        b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/status\r\nContent-Length: 0\r\n\r\n"
        % forbidden.port
    )
    allowed = Listener(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\": true}")
    allow = [f"127.0.0.1:{redirector.port}", f"http://127.0.0.1:{allowed.port}/api/"]
    rebound = loopback_name()
    if rebound is not None:
        allow.append(f"{rebound}:{forbidden.port}")
    try:
        server = servers.start(
            "kraken-pipeline",
            config(tmp_path, outbound_allow=allow),
        )
        api = Http(server.port("http"))
        for name, url in [
            ("admin", f"http://127.0.0.1:{forbidden.port}"),
            ("self", f"http://127.0.0.1:{server.port('http')}"),
            ("redirected", f"http://127.0.0.1:{redirector.port}"),
            ("outside-prefix", f"http://127.0.0.1:{allowed.port}/"),
            ("inside-prefix", f"http://127.0.0.1:{allowed.port}/api/"),
        ]:
            api.ok("POST", "/services/define", http_service(name, url))
            api.ok("POST", f"/services/start/{name}")
        refusals = [("admin", "/status"), ("self", "/routes"), ("redirected", "/"), ("outside-prefix", "/")]
        for name, path in refusals:
            answer = api.post(f"/services/call/{name}/get", {"path": path})
            assert answer.status == 400, (name, answer.raw)
            assert "outbound_allow" in answer.json["error"], (name, answer.json)
        if rebound is not None:  # an allowed *name* that resolves to loopback (DNS rebinding)
            api.ok("POST", "/services/define", http_service("rebound", f"http://{rebound}:{forbidden.port}"))
            api.ok("POST", "/services/start/rebound")
            answer = api.post("/services/call/rebound/get", {"path": "/status"})
            assert answer.status == 400 and "does not allow" in answer.json["error"], answer.raw
        assert forbidden.seen == [], "a refused destination was connected to"
        assert len(redirector.seen) == 1  # allowed itself; its redirect was not followed
        ok = api.post("/services/call/inside-prefix/get", {"path": "x"})
        assert ok.status == 200 and ok.json["ok"]["status"] == 200, ok.raw
        metrics = api.get("/metrics").raw.decode()
        refused = 5 if rebound is not None else 4
        assert f'kraken_pipeline_refused_total{{limit="outbound"}} {refused}.0' in metrics
        assert server.log().count("limit outbound refused service admin") == 1
        warned = f"service admin: http://127.0.0.1:{forbidden.port} is not in pipeline.outbound_allow"
        assert warned in server.log()  # said when the service started
    finally:
        for listener in (forbidden, redirector, allowed):
            listener.close()


def test_plain_listeners_are_announced(servers: ServerProcess.Pool, tmp_path: Path) -> None:
    loopback = servers.start("kraken-pipeline", config(tmp_path), name="loopback")
    assert "notice: the pipeline API listens without TLS on loopback" in loopback.log()
    assert "WARNING" not in loopback.log()
    exposed = servers.start("kraken-pipeline", {**config(tmp_path), "listen": ["tcp:0"]}, name="exposed")
    assert "WARNING: the pipeline API listens without TLS on every interface" in exposed.log()
    assert "no pipeline.api_token" in exposed.log()
