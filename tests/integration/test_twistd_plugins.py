"""Every kraken plugin through the real ``twistd``: listed in --help, config errors in one line."""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

import pytest

from kraken.cli.cluster import built_servers
from tests.support import run_twistd

SERVERS = built_servers()


def test_at_least_one_server_is_built() -> None:
    assert SERVERS, "no kraken-* twistd plugin is registered"


def test_help_lists_every_kraken_plugin_quickly() -> None:
    started = time.monotonic()
    result = run_twistd("--help")
    elapsed = time.monotonic() - started
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.strip().startswith("kraken-")]
    assert sorted(listed) == sorted(SERVERS)
    for line in result.stdout.splitlines():
        if line.strip().startswith("kraken-"):
            assert len(line.split(None, 1)) == 2, f"no description: {line!r}"
    assert elapsed < 10


@pytest.mark.parametrize("tapname", SERVERS)
def test_config_errors_exit_nonzero_with_one_clear_line(tapname: str, tmp_path: Path) -> None:
    bad_key = tmp_path / "bad-key.yaml"
    bad_key.write_text("no_such_key: 1\n")
    bad_type = tmp_path / "bad-type.yaml"
    bad_type.write_text("listen: 12\n")
    cases = [
        (str(bad_key), f"{bad_key}: unknown key 'no_such_key'"),
        (str(bad_type), f"{bad_type}: listen: expected a list, got 12"),
        (str(tmp_path / "missing.yaml"), f"config file not found: {tmp_path / 'missing.yaml'}"),
    ]
    for path, message in cases:
        result = run_twistd(tapname, "--config", path)
        assert result.returncode != 0
        errors = result.stderr.strip().splitlines()
        assert len(errors) == 1, result.stderr
        assert errors[0].startswith(f"{tapname}: config error: {message}"), result.stderr


ROLE_OF = {"kraken-build-index": "build-index", "kraken-dashboard": "client"}


def build_service(tapname: str, pki: Path, *settings: str, reactor: Any = None) -> Any:
    """The plugin's service made on *reactor* (a fresh fake by default), with the role's dev
    certificate and *settings* (``key=value``, as ``--set`` takes them)."""
    from twisted.application.service import IServiceMaker
    from twisted.internet.testing import MemoryReactorClock
    from twisted.plugin import getPlugins

    maker = next(p for p in getPlugins(IServiceMaker) if p.tapname == tapname)
    role = ROLE_OF.get(tapname, tapname.removeprefix("kraken-"))
    tls = {"ca": pki / "ca.pem", "cert": pki / f"{role}.pem", "key": pki / f"{role}.key"}
    options = maker.options()
    args = [f"tls.{k}={v}" for k, v in tls.items()] + list(settings)
    options.parseOptions([word for a in args for word in ("--set", a)])
    return importlib.import_module(maker.module).makeService(options, reactor=reactor or MemoryReactorClock())


@pytest.mark.parametrize("tapname", SERVERS)
def test_make_service_takes_a_fake_reactor(
    tapname: str, pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """makeService(options, reactor=...) listens on the reactor it is given, not the global one."""
    from twisted.internet.testing import MemoryReactorClock

    monkeypatch.chdir(tmp_path)
    fake = MemoryReactorClock()
    service = build_service(tapname, pki, reactor=fake)
    service.startService()
    try:
        assert fake.tcpServers or fake.unixServers, f"{tapname} listened on nothing"
    finally:
        service.stopService()


@pytest.mark.parametrize(
    ("tapname", "slots", "lowat"), [("kraken-origin", 2, 128 * 1024), ("kraken-agent", 0, 0)]
)
def test_origin_and_agent_upload_defaults_and_overrides(
    tapname: str, slots: int, lowat: int, pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kraken.p2p.service import SchedulerService

    monkeypatch.chdir(tmp_path)
    overrides = ("scheduler.upload_slots=5", "scheduler.send_lowat=0", "scheduler.tcp_congestion=reno")
    for settings, expected in (((), (slots, lowat, "")), (overrides, (5, 0, "reno"))):
        service = build_service(tapname, pki, *settings)
        scheduler = next(s for s in service if isinstance(s, SchedulerService)).scheduler
        config = scheduler.config
        assert (scheduler.uploads.limit, config.send_lowat, config.tcp_congestion) == expected


def test_a_port_in_use_stops_twistd_with_the_reason(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "tracker.yaml"
        config.write_text(f"listen: ['tcp:{port}:interface=127.0.0.1']\ntracker: {{origins: []}}\n")
        result = run_twistd("kraken-tracker", "--config", str(config))
    assert result.returncode != 0
    assert "Address already in use" in result.stdout + result.stderr
