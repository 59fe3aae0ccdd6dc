"""``workers: N``: which listeners the workers share and what each child is told."""

from __future__ import annotations

import json

import pytest

from kraken.core.config import ConfigError
from kraken.pubsub.workers import Plan, shared


def test_only_reuseport_entries_are_shared() -> None:
    entries = ["tcp:1:interface=127.0.0.1", "reuseport:tcp:2", "tls:reuseport:tcp:3", "tls:tcp:4"]
    assert shared(entries) == ["reuseport:tcp:2", "tls:reuseport:tcp:3"]
    with pytest.raises(ConfigError, match="reuseport"):
        Plan.make(2, ["tcp:12355"], [])


def test_each_child_gets_its_own_peer_listener_and_the_shared_ones() -> None:
    plan = Plan.make(3, ["reuseport:tcp:12355:interface=127.0.0.1", "tcp:12360"], ["tcp:12357"])
    assert len(set(plan.members)) == 3
    args = plan.child_settings(2, "/run/w2.json")
    settings = dict(args[i + 1].split("=", 1) for i in range(0, len(args), 2))
    assert settings["pubsub.cluster_self"] == plan.members[2]
    assert json.loads(settings["pubsub.cluster_members"]) == plan.members
    port = plan.members[2].rpartition(":")[2]
    assert json.loads(settings["listen"]) == [
        "reuseport:tcp:12355:interface=127.0.0.1",
        f"tls:tcp:{port}:interface=127.0.0.1",
    ]
    assert json.loads(settings["pubsub.websocket_listen"]) == []  # 12357 stays with worker 0
    assert settings["pubsub.workers"] == "1" and settings["port_file"] == "/run/w2.json"
