"""Throughput and latency of a 5-stage pipeline of Lambda stages, against plain Python calls.

    .venv/bin/python benchmarks/pipeline_throughput.py [--events 20000] [--http-events 20000] [--durable]

Measured in one run:
  floor       the same five functions called directly in Python (the floor);
  in-process  ``Pipeline.call`` of the started pipeline (prepare/transform mappings, schemas,
              stats), one event at a time, synchronous;
  stream API  ``POST /pipelines/stream`` of a real ``twistd kraken-pipeline`` on loopback,
              one request carrying all events (NDJSON back), against the same request to a
              pipeline with no components (the HTTP + JSON floor);
  call API    sequential ``POST /pipelines/call`` latency (p50/p99);
  pubsub      (``--pubsub``) messages published to a real ``kraken-pubsub`` fed to the
              pipeline by a pubsub trigger, not durable and durable with a key;
  durable     (``--durable``) the same stream request to the pipeline defined ``durable``
              (every event journaled in SQLite, group commits), without and with an
              idempotency key, against the non-durable stream of the same run; and ``cast``
              in requests of 1,000 events (answered once journaled) against non-durable casts.
Figures are printed with their ratios to the floors.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from twisted.internet.task import Clock  # noqa: E402

from kraken.pipeline.clients.base import ClientContext  # noqa: E402
from kraken.pipeline.lambdas.examples import _num  # noqa: E402
from kraken.pipeline.pipelines import PipelineRegistry  # noqa: E402
from kraken.pipeline.services import ServiceRegistry  # noqa: E402
from kraken.pubsub import wire  # noqa: E402

FUNCTIONS = ["add_one", "mult_by_two", "minus_three", "add_one", "minus_three"]
SERVICE = {
    "name": "add-mult-minus",
    "client": {"module": "octopus.lambda", "start": {"module": "AddMultMinus"}},
    "interface": {
        name: {
            "input": {"event": {"type": "number"}},
            "call": {"function": name},
            "output": {"event": {"type": "number"}},
        }
        for name in set(FUNCTIONS)
    },
}
PIPELINE = {
    "name": "five-stages",
    "components": [
        {
            "type": "stage",
            "name": f"s{i}",
            "service": {"name": "add-mult-minus", "function": fn},
            "prepare": {"event": "args['event']"},
            "transform": {"event": "args['event']"},
        }
        for i, fn in enumerate(FUNCTIONS)
    ],
}
EMPTY = {"name": "no-stages", "components": []}
DURABLE = {**PIPELINE, "name": "five-stages-durable", "durable": True}
KEYED = {**PIPELINE, "name": "five-stages-keyed", "durable": {"key": "args['event']"}}


def plain(event: dict[str, Any]) -> dict[str, Any]:
    """The floor: the five lambda bodies as plain calls."""
    e = {"event": _num(event, "event") + 1}
    e = {"event": _num(e, "event") * 2}
    e = {"event": _num(e, "event") - 3}
    e = {"event": _num(e, "event") + 1}
    return {**event, "event": _num(e, "event") - 3}


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def timed(fn: Any, events: list[dict[str, Any]]) -> tuple[float, list[float]]:
    latencies = []
    start = time.perf_counter()
    for e in events:
        t = time.perf_counter()
        fn(e)
        latencies.append(time.perf_counter() - t)
    return time.perf_counter() - start, latencies


def in_process(n: int) -> dict[str, float]:
    clock = Clock()
    services = ServiceRegistry(ClientContext(clock))
    services.define(SERVICE)
    services.start("add-mult-minus")
    pipelines = PipelineRegistry(services, clock)
    pipelines.define(PIPELINE)
    pipelines.start("five-stages")
    rt = pipelines.runtime("five-stages")
    events = [{"event": i} for i in range(n)]
    assert rt.call({"event": 2}) == plain({"event": 2}) == {"event": 1}
    timed(plain, events[:2000])
    timed(rt.call, events[:2000])
    floor_total, floor_lat = timed(plain, events)
    total, lat = timed(rt.call, events)
    return {
        "floor_eps": n / floor_total,
        "floor_p99_us": p99(floor_lat) * 1e6,
        "eps": n / total,
        "p99_us": p99(lat) * 1e6,
        "per_stage_us": (total - floor_total) / n / len(FUNCTIONS) * 1e6,
    }


def post(port: int, path: str, body: Any) -> bytes:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=300) as resp:
        return resp.read()


def start_server(
    workdir: Path, plugin: str = "kraken-pipeline", section: dict[str, Any] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    port_file = workdir / f"{plugin}-ports.json"
    config = workdir / f"{plugin}.yaml"
    name = plugin.removeprefix("kraken-")
    config.write_text(
        json.dumps(
            {
                "listen": ["tcp:0:interface=127.0.0.1"],
                "log": {"level": "warn"},
                "port_file": str(port_file),
                name: section if section is not None else {"default_timeout": 300.0},
            }
        )
    )
    twistd = str(Path(sys.executable).with_name("twistd"))
    proc = subprocess.Popen(
        [twistd, "--pidfile=", "-n", plugin, "--config", str(config)],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit(f"{plugin} did not start")
        time.sleep(0.05)
    ports = json.loads(port_file.read_text())
    return proc, ports["http" if plugin == "kraken-pipeline" else "memcached"]


def get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as resp:
        return json.loads(resp.read())


def pubsub_fed(n: int) -> dict[str, float]:
    """Messages published to a real kraken-pubsub, fed to the 5 stages by a pubsub trigger:
    not durable, and durable with an idempotency key (each message journaled)."""
    local = ["tcp:0:interface=127.0.0.1"]
    with tempfile.TemporaryDirectory() as tmp:
        broker, mc_port = start_server(
            Path(tmp), "kraken-pubsub",
            {"websocket_listen": local, "admin_listen": local, "messages_stored_per_router_shard": 4 * n},
        )
        server, port = start_server(
            Path(tmp), section={"default_timeout": 300.0, "pubsub_server": f"127.0.0.1:{mc_port}",
                                "pubsub_tls": False},
        )
        try:
            post(port, "/services/define", SERVICE)
            post(port, "/services/start/add-mult-minus", {})
            out: dict[str, float] = {}
            sock = socket.create_connection(("127.0.0.1", mc_port))
            runs = ((PIPELINE, "bench", "pubsub"), (KEYED, "bench.durable", "pubsub_durable"))
            for definition, topic, key in runs:
                name = topic.replace(".", "-")
                post(port, "/pipelines/define", {**definition, "name": name})
                post(port, f"/pipelines/start/{name}", {})
                trigger = {"name": topic, "type": "pubsub", "topics": [topic], "pipeline": name}
                post(port, "/triggers/define", trigger)
                while not get(port, f"/triggers/status/{topic}")["connected"]:
                    time.sleep(0.05)
                start = time.perf_counter()
                for first in range(0, n, 1000):
                    records = [([topic.encode()], json.dumps({"event": i}).encode())
                               for i in range(first, min(n, first + 1000))]
                    sock.sendall(wire.set_command(b"publish", wire.publish_body(records)))
                    assert sock.recv(100).startswith(b"STORED")
                while get(port, f"/triggers/status/{topic}")["delivered"] < n:
                    time.sleep(0.01)
                out[f"{key}_eps"] = n / (time.perf_counter() - start)
            return out
        finally:
            for proc in (server, broker):
                proc.terminate()
                proc.wait(10)


def over_http(n: int, calls: int, durable: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start_server(Path(tmp))
        try:
            post(port, "/services/define", SERVICE)
            post(port, "/services/start/add-mult-minus", {})
            for definition in (PIPELINE, EMPTY, DURABLE, KEYED):
                post(port, "/pipelines/define", definition)
                post(port, f"/pipelines/start/{definition['name']}", {})
            events = [{"event": i} for i in range(n)]
            post(port, "/pipelines/stream/five-stages", events[:2000])
            out: dict[str, float] = {}
            for name, key in (("no-stages", "empty"), ("five-stages", "stream")):
                start = time.perf_counter()
                lines = post(port, f"/pipelines/stream/{name}", events).splitlines()
                out[f"{key}_eps"] = n / (time.perf_counter() - start)
                assert len(lines) == n
            latencies = []
            for i in range(calls):
                t = time.perf_counter()
                post(port, "/pipelines/call/five-stages", {"event": i})
                latencies.append(time.perf_counter() - t)
            out["call_p50_ms"] = statistics.median(latencies) * 1e3
            out["call_p99_ms"] = p99(latencies) * 1e3
            out["http_per_stage_us"] = (1 / out["stream_eps"] - 1 / out["empty_eps"]) / len(FUNCTIONS) * 1e6
            if durable:
                out.update(journaled(port, n))
            return out
        finally:
            proc.terminate()
            proc.wait(10)


def journaled(port: int, n: int, rounds: int = 3) -> dict[str, float]:
    """Durable streams and casts against non-durable ones, all on the server just measured;
    the kinds take turns for *rounds* rounds and each keeps its best (the machine is shared)."""
    out: dict[str, float] = {}
    post(port, "/pipelines/stream/five-stages-durable", [{"event": -i} for i in range(2000)])
    for r in range(rounds):
        offset = 100 * n * (r + 1)  # keys never seen: no run answers from the journal
        streams = (
            ("five-stages", "plain2"), ("five-stages-durable", "durable"), ("five-stages-keyed", "keyed")
        )
        for name, key in streams:
            events = [{"event": offset + i} for i in range(n)]
            start = time.perf_counter()
            lines = post(port, f"/pipelines/stream/{name}", events).splitlines()
            out[f"{key}_eps"] = max(out.get(f"{key}_eps", 0.0), n / (time.perf_counter() - start))
            assert len(lines) == n and json.loads(lines[-1])["event"] == (offset + n - 1) * 2 - 3
        for name, key in (("five-stages", "cast_plain"), ("five-stages-keyed", "cast_durable")):
            start = time.perf_counter()
            for first in range(0, n, 1000):
                batch = [{"event": offset + 50 * n + i} for i in range(first, first + 1000)]
                assert len(json.loads(post(port, f"/pipelines/cast/{name}", batch))["ok"]) == 1000
            out[f"{key}_eps"] = max(out.get(f"{key}_eps", 0.0), n / (time.perf_counter() - start))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/events/summary/five-stages-keyed") as resp:
        summary = json.loads(resp.read())
    assert summary["done"] == 2 * n * rounds and summary["open"] == 0, summary
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000, help="events for the in-process run")
    parser.add_argument("--http-events", type=int, default=20000, help="events per stream request")
    parser.add_argument("--calls", type=int, default=1000, help="sequential single-event HTTP calls")
    parser.add_argument("--durable", action="store_true", help="also measure durable (journaled) pipelines")
    parser.add_argument("--pubsub", action="store_true", help="also measure pipelines fed by kraken-pubsub")
    args = parser.parse_args()
    a = in_process(args.events)
    print(f"5 Lambda stages, {args.events} events in-process, {args.http_events} per stream request")
    print(f"floor (plain Python calls):  {a['floor_eps']:>10,.0f} events/s  p99 {a['floor_p99_us']:7.1f} µs")
    print(
        f"in-process Pipeline.call:    {a['eps']:>10,.0f} events/s  p99 {a['p99_us']:7.1f} µs"
        f"  = {a['eps'] / a['floor_eps']:.3f}x floor; overhead {a['per_stage_us']:.1f} µs per stage"
    )
    h = over_http(args.http_events, args.calls, args.durable)
    print(f"stream API, no stages:       {h['empty_eps']:>10,.0f} events/s  (HTTP + JSON floor)")
    print(
        f"stream API, 5 stages:        {h['stream_eps']:>10,.0f} events/s"
        f"  = {h['stream_eps'] / h['empty_eps']:.3f}x HTTP floor,"
        f" {h['stream_eps'] / a['floor_eps']:.4f}x Python floor;"
        f" {h['http_per_stage_us']:.1f} µs per stage"
    )
    print(f"call API, one event/request: p50 {h['call_p50_ms']:.2f} ms  p99 {h['call_p99_ms']:.2f} ms")
    ok = a["eps"] >= 10_000 and a["per_stage_us"] < 20
    print(f"targets (>= 10,000 events/s in-process, < 20 µs per stage): {'met' if ok else 'NOT met'}")
    if args.durable:
        base = h["plain2_eps"]
        print(f"stream API, 5 stages again:  {base:>10,.0f} events/s  (baseline; each: best of 3)")
        for key, label in (("durable", "durable, no key"), ("keyed", "durable, idempotency key")):
            eps = h[key + "_eps"]
            print(f"stream API, {label + ':':<26}{eps:>8,.0f} events/s  = {eps / base:.3f}x")
        print(f"cast API, 1000/request:      {h['cast_plain_eps']:>10,.0f} events/s  (not durable)")
        ratio = h["cast_durable_eps"] / h["cast_plain_eps"]
        print(
            f"cast API, durable + key:     {h['cast_durable_eps']:>10,.0f} events/s  = {ratio:.3f}x"
            " (answered once committed)"
        )
        met = min(h["durable_eps"], h["keyed_eps"]) >= max(10_000, 0.5 * base)
        print(f"durable targets (>= 0.5x non-durable and >= 10,000 events/s): {'met' if met else 'NOT met'}")
    if args.pubsub:
        f = pubsub_fed(args.http_events)
        base = h["stream_eps"]
        print(
            f"kraken-pubsub fed:           {f['pubsub_eps']:>10,.0f} events/s"
            f"  = {f['pubsub_eps'] / base:.3f}x stream API"
        )
        print(
            f"kraken-pubsub fed, durable:  {f['pubsub_durable_eps']:>10,.0f} events/s"
            f"  = {f['pubsub_durable_eps'] / base:.3f}x stream API"
        )


if __name__ == "__main__":
    main()
