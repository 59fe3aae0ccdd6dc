"""``kraken pubsub publish`` / ``subscribe`` against a real kraken-pubsub twistd process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_pubsub_server import pubsub_config
from tests.support import ServerProcess, free_port


@pytest.fixture
def server(servers: ServerProcess.Pool, pki: Path) -> ServerProcess:
    return servers.start("kraken-pubsub", pubsub_config(pki))


def kraken(server: ServerProcess, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    address = ["--server", f"127.0.0.1:{server.port('memcached')}", "--admin", f"http://127.0.0.1:{server.port('admin')}"]
    return subprocess.run(
        [sys.executable, "-m", "kraken.cli", "pubsub", *address, *args],
        capture_output=True, text=True, timeout=timeout, env=os.environ.copy(),
    )


def start_kraken(server: ServerProcess, *args: str) -> subprocess.Popen[str]:
    address = ["--server", f"127.0.0.1:{server.port('memcached')}", "--admin", f"http://127.0.0.1:{server.port('admin')}"]
    return subprocess.Popen(
        [sys.executable, "-m", "kraken.cli", "pubsub", *address, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_subscribers(server: ServerProcess, topic: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = json.loads(kraken(server, "--json", "dump-topics").stdout)["topics"]
        if any(r["topic"] == topic and r["subscribers"] >= count for r in rows):
            return
        time.sleep(0.05)
    raise AssertionError(f"no subscriber on {topic}")


def test_publish_then_replay_with_since(server: ServerProcess) -> None:
    done = kraken(server, "publish", "news", "hello", "two words")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "published 2 messages to news\n"
    got = kraken(server, "subscribe", "news", "--since", "3600", "--wait", "0.3")
    assert got.returncode == 0, got.stderr
    assert got.stdout == "news\thello\nnews\ttwo words\n"
    assert got.stderr == ""  # the horizon before the server's start was clamped, not refused


def test_live_subscriber_follows_in_json(server: ServerProcess) -> None:
    follower = start_kraken(server, "subscribe", "news", "weather", "--follow", "--json", "--count", "3")
    try:
        try:
            wait_for_subscribers(server, "weather", 1)
        except AssertionError:
            follower.kill()
            raise AssertionError(follower.communicate()) from None
        assert kraken(server, "publish", "news", "one").returncode == 0
        assert kraken(server, "publish", "sports", "ignored").returncode == 0
        assert kraken(server, "publish", "weather,news", "rain").returncode == 0
        assert kraken(server, "publish", "weather", "sun").returncode == 0
        out, err = follower.communicate(timeout=10)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    # the publish to weather,news arrives as one record per router shard that holds the topics
    assert lines[0] == {"topics": ["news"], "message": "one"}
    assert {m["message"] for m in lines} <= {"one", "rain", "sun"} and len(lines) == 3
    assert all("sports" not in m["topics"] for m in lines)


def test_subscribe_without_follow_stops_after_wait(server: ServerProcess) -> None:
    started = time.monotonic()
    got = kraken(server, "subscribe", "quiet", "--wait", "0.5")
    assert got.returncode == 0 and got.stdout == ""
    assert 0.5 <= time.monotonic() - started < 10


def test_refused_connection_names_the_server_and_the_fix() -> None:
    port = free_port()
    got = subprocess.run(
        [sys.executable, "-m", "kraken.cli", "pubsub", "--server", f"127.0.0.1:{port}", "publish", "t", "m"],
        capture_output=True, text=True, timeout=20,
    )
    assert got.returncode == 1
    assert f"cannot reach 127.0.0.1:{port}" in got.stderr and "scripts/cluster.sh" in got.stderr
