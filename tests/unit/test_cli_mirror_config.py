"""``kraken registry mirror-config``: containerd hosts.toml files for the agent's mirror."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from kraken.cli.main import main


def test_writes_one_hosts_toml_per_upstream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "mirror-config", "docker.io", "ghcr.io", "reg.local:5000=http://reg.local:5000",
                 "--agent", "http://127.0.0.1:5055", "--dir", str(tmp_path / "certs.d")]) == 0
    hub = tomllib.loads((tmp_path / "certs.d" / "docker.io" / "hosts.toml").read_text())
    assert hub == {"server": "https://registry-1.docker.io",
                   "host": {"http://127.0.0.1:5055": {"capabilities": ["pull", "resolve"]}}}
    ghcr = tomllib.loads((tmp_path / "certs.d" / "ghcr.io" / "hosts.toml").read_text())
    assert ghcr["server"] == "https://ghcr.io"
    local = tomllib.loads((tmp_path / "certs.d" / "reg.local:5000" / "hosts.toml").read_text())
    assert local["server"] == "http://reg.local:5000"
    assert "wrote" in capsys.readouterr().out


def test_prints_without_dir(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "mirror-config", "quay.io"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# quay.io/hosts.toml\n")
    assert tomllib.loads(out)["host"] == {"http://127.0.0.1:5055": {"capabilities": ["pull", "resolve"]}}


@pytest.mark.parametrize("argv", [["bad host"], ["h=ftp://x"], ["docker.io", "--agent", "127.0.0.1:5055"]])
def test_bad_arguments_are_explained(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "mirror-config", *argv]) == 2
    assert "kraken registry mirror-config:" in capsys.readouterr().err
