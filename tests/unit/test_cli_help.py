"""Every ``kraken`` command's help ends with an example; errors name the fix."""

from __future__ import annotations

import contextlib
import io

import pytest

from kraken.cli import hints
from kraken.cli.examples import EXAMPLES
from kraken.cli.main import COMMANDS
from kraken.cli.main import main as kraken_cli


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_help_shows_the_example(command: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        kraken_cli([*command.split()[1:], "--help"])
    assert exited.value.code == 0
    shown = out.getvalue().rpartition("\nexample")[2]
    assert shown.startswith(("s:\n", ":\n")) and command in shown


def test_every_command_has_an_example() -> None:
    assert {f"kraken {name}" for name in COMMANDS} <= set(EXAMPLES)


def test_refused_names_the_server_and_the_command() -> None:
    text = hints.unreachable("https://127.0.0.1:3141", "Connection refused.")
    assert text.startswith("cannot reach https://127.0.0.1:3141: Connection refused; ")
    assert "kraken-state" in text and "bash scripts/cluster.sh" in text and "etc/state.yaml" in text
    assert "kraken-" not in hints.unreachable("10.1.2.3:9", "refused") and "cluster.sh" in hints.unreachable(
        "10.1.2.3:9", "refused"
    )


def test_missing_certificate_names_kraken_certs() -> None:
    assert hints.missing_certificate("/nonexistent/pki/ca.pem") == (
        "no certificate at /nonexistent/pki/ca.pem: create the dev CA and certificates with "
        "`kraken certs dev /nonexistent/pki`"
    )
    assert hints.missing_certificate(__file__) is None


def test_blob_push_without_certificates(capsys: pytest.CaptureFixture[str]) -> None:
    assert kraken_cli(["blob", "push", __file__, "--pki", "/nonexistent/pki"]) == 1
    assert "`kraken certs dev /nonexistent/pki`" in capsys.readouterr().err


def test_state_without_certificates(capsys: pytest.CaptureFixture[str]) -> None:
    assert kraken_cli(["state", "--pki", "/nonexistent/pki", "nodes"]) == 1
    assert "`kraken certs dev /nonexistent/pki`" in capsys.readouterr().err
