"""The twistd entry point: the example config loads, bad keys are named, listeners are wired."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock

from kraken.pubsub.tap import Options, makeService

REPO = Path(__file__).resolve().parents[2]


def options(pki: Path, *extra: str) -> Options:
    opts = Options()
    opts.parseOptions([
        "--config", str(REPO / "etc" / "pubsub.yaml"),
        "--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "pubsub.pem"),
        "--tls-key", str(pki / "pubsub.key"), *extra,
    ])
    return opts


def test_example_config_builds_every_listener(pki: Path) -> None:
    opts = options(pki, "--pubsub-num-router-shards", "8")
    assert opts.config.pubsub.num_router_shards == 8
    assert opts.config.pubsub.messages_stored_per_router_shard == 10000
    reactor = MemoryReactorClock()
    svc = makeService(opts, reactor)
    svc.startService()
    ports = sorted(port for port, *_ in reactor.tcpServers)
    assert ports == [12355, 12356, 12357, 12358]
    assert svc.router.shards == 8
    svc.stopService()


def test_unknown_key_is_named() -> None:
    with pytest.raises(SystemExit) as exc:
        Options().parseOptions(["--set", "pubsub.max_clients=3"])
    assert "pubsub.max_clients" in str(exc.value)
