"""deploy/systemd/kraken@.service: valid for systemd, hardened, and its command line starts every
server on the installed configs of deploy/config/.

``systemd-analyze verify`` needs no running systemd: it loads the unit into a private manager
in test mode. It does need the units the instance depends on (sysinit.target...) and the
ExecStart binary, so each check runs against a small root directory holding the unit, a
stand-in ``/opt/kraken/bin/twistd`` and a copy of this machine's own unit files.
"""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from kraken.cli.cluster import built_servers
from tests.support import REPO

UNIT = REPO / "deploy" / "systemd" / "kraken@.service"
CONFIGS = REPO / "deploy" / "config"
SERVERS = [name.removeprefix("kraken-") for name in built_servers()]
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
# The dev PKI's file for a server whose certificate has another role.
ROLE_FILES = {"dashboard": "client"}

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or not SYSTEM_UNITS.is_dir(),
    reason="systemd-analyze (Debian package systemd) is not installed",
)


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system")
    twistd = root / "opt/kraken/bin/twistd"
    twistd.parent.mkdir(parents=True)
    twistd.write_text("#!/bin/sh\n")
    twistd.chmod(0o755)
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True)
    # Only regular files: the aliases are absolute symlinks that would loop under --root.
    for path in SYSTEM_UNITS.iterdir():
        if path.is_file() and not path.is_symlink():
            shutil.copy(path, units)
    return root


def _analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args[:1], f"--root={root}", *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_built_server_has_an_installed_config() -> None:
    assert SERVERS
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(SERVERS)


@needs_systemd_analyze
@pytest.mark.parametrize("server", SERVERS)
def test_systemd_analyze_verify_passes_silently(server: str, unit_root: Path) -> None:
    result = _analyze(unit_root, "verify", f"kraken@{server}.service")
    # verify exits 0 even for unknown keys and unparsable values; it only warns.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_verify_would_catch_a_bad_key(unit_root: Path, tmp_path: Path) -> None:
    """The check above can fail: a misspelt option is reported."""
    broken = tmp_path / "root"
    shutil.copytree(unit_root, broken, symlinks=True)
    unit = broken / "etc/systemd/system/kraken@.service"
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystem=strikt"))
    result = _analyze(broken, "verify", "kraken@origin.service")
    assert "strikt" in result.stdout + result.stderr


@needs_systemd_analyze
def test_hardening_exposure_is_low(unit_root: Path) -> None:
    result = _analyze(unit_root, "security", "--offline=true", "--threshold=20", "kraken@origin.service")
    assert result.returncode == 0, result.stdout + result.stderr
    score = re.search(r"Overall exposure level for kraken@origin.service: ([0-9.]+)", result.stdout)
    assert score, result.stdout
    assert float(score.group(1)) <= 2.0, result.stdout


def _unit_settings() -> dict[str, list[str]]:
    text = UNIT.read_text().replace("\\\n", " ")
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_is_hardened() -> None:
    settings = _unit_settings()
    for key, value in {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "StateDirectory": "kraken/%i",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert settings.get(key) == [value], key


@pytest.mark.parametrize("server", SERVERS)
def test_exec_start_builds_the_server_on_its_installed_config(
    server: str, pki: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unit's own command line, with its specifiers filled as systemd would (%i the server,
    %d the credentials holding this server's certificate), parses and builds the service; the
    config's data paths move from /var/lib/kraken to a temporary directory."""
    from twisted.application.service import IServiceMaker
    from twisted.internet.testing import MemoryReactorClock
    from twisted.plugin import getPlugins

    credentials = tmp_path / "credentials"
    credentials.mkdir()
    credentials_of = dict(entry.split(":", 1) for entry in _unit_settings()["LoadCredential"])
    for name, source in credentials_of.items():
        held = source.replace("%i", ROLE_FILES.get(server, server)).replace("/etc/kraken/pki/", "")
        shutil.copy(pki / held, credentials / name)
    etc = tmp_path / "etc"
    etc.mkdir()
    state = tmp_path / "var-lib-kraken"
    config = (CONFIGS / f"{server}.yaml").read_text().replace("/var/lib/kraken", str(state))
    config = config.replace("/etc/kraken/pki", str(pki))
    (etc / f"{server}.yaml").write_text(config)

    (exec_start,) = _unit_settings()["ExecStart"]
    command = exec_start.replace("%i", server).replace("%d", str(credentials))
    command = command.replace("/etc/kraken/", f"{etc}/")
    argv = shlex.split(command)
    assert argv[0] == "/opt/kraken/bin/twistd"
    assert argv[1:4] == ["--nodaemon", "--pidfile=", f"kraken-{server}"]

    monkeypatch.chdir(tmp_path)
    maker = next(p for p in getPlugins(IServiceMaker) if p.tapname == f"kraken-{server}")
    options = maker.options()
    options.parseOptions(argv[4:])
    assert options.config.tls.key == str(credentials / "key.pem")
    reactor = MemoryReactorClock()
    service = importlib.import_module(maker.module).makeService(options, reactor=reactor)
    service.startService()
    try:
        assert reactor.tcpServers, f"kraken-{server} listened on nothing"
    finally:
        service.stopService()
