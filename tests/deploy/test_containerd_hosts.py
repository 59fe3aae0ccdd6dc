"""``kraken containerd hosts``: hosts.toml files containerd reads (TOML with the mirror first)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from kraken.cli.containerd import MirrorError, hosts_toml, write_hosts


def test_docker_io_falls_back_to_its_real_api_host() -> None:
    parsed = tomllib.loads(hosts_toml("docker.io", "http://10.0.0.5:5055"))
    assert parsed == {
        "server": "https://registry-1.docker.io",
        "host": {"http://10.0.0.5:5055": {"capabilities": ["pull", "resolve"]}},
    }


def test_default_entry_has_no_server() -> None:
    parsed = tomllib.loads(hosts_toml("_default", "http://127.0.0.1:5055"))
    assert "server" not in parsed and list(parsed["host"]) == ["http://127.0.0.1:5055"]


@pytest.mark.parametrize(
    ("registry", "mirror"),
    [("docker.io/../../etc", "http://a:1"), ("ghcr.io", 'http://a:1"]\nx'), ("ghcr.io", "ftp://a:1")],
)
def test_bad_names_are_refused(registry: str, mirror: str) -> None:
    with pytest.raises(MirrorError):
        hosts_toml(registry, mirror)


def test_write_replaces_files_and_leaves_no_temporary(tmp_path: Path) -> None:
    write_hosts(tmp_path, ["ghcr.io", "registry.local:5000"], "http://127.0.0.1:1")
    written = write_hosts(tmp_path, ["ghcr.io"], "http://127.0.0.1:2")
    assert written == [tmp_path / "ghcr.io" / "hosts.toml"]
    assert "127.0.0.1:2" in written[0].read_text()
    assert sorted(p.name for p in (tmp_path / "ghcr.io").iterdir()) == ["hosts.toml"]
    assert tomllib.loads((tmp_path / "registry.local:5000" / "hosts.toml").read_text())["server"] == (
        "https://registry.local:5000"
    )


def test_command_line(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "kraken.cli.main", "containerd", "hosts", str(tmp_path), "--mirror",
         "http://127.0.0.1:5055"],
        capture_output=True, text=True, check=False,
    )
    assert (ok.returncode, ok.stdout.strip()) == (0, str(tmp_path / "docker.io" / "hosts.toml"))
    bad = subprocess.run(
        [sys.executable, "-m", "kraken.cli.main", "containerd", "hosts", str(tmp_path), "--mirror", "x"],
        capture_output=True, text=True, check=False,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("kraken containerd: mirror must be")
