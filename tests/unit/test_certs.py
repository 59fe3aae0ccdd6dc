"""The dev CA: files that openssl and our TLS contexts both accept; no silent CA overwrite."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kraken.cli.main import main
from kraken.core import certs
from kraken.core.tls import ServerTLS, TLSConfigError, TLSSettings, client_creator


def test_cli_dev_pki_verifies_with_openssl_and_loads_in_our_contexts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "dev", str(tmp_path)]) == 0
    for role in certs.ROLES:
        result = subprocess.run(
            ["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"), str(tmp_path / f"{role}.pem")],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        settings = TLSSettings(
            str(tmp_path / "ca.pem"), str(tmp_path / f"{role}.pem"), str(tmp_path / f"{role}.key")
        )
        ServerTLS(settings, {role}).getContext()
        client_creator(settings, "localhost", {"origin"})
    text = subprocess.run(
        [
            "openssl",
            "x509",
            "-in",
            str(tmp_path / "agent.pem"),
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "OU = agent" in text and "IP Address:127.0.0.1" in text
    key = (tmp_path / "agent.key").stat().st_mode & 0o777
    assert key == 0o600


def test_cli_issue_with_hosts_and_refuses_to_replace_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "init", str(tmp_path)]) == 0
    ca_before = (tmp_path / "ca.pem").read_bytes()
    assert main(["certs", "init", str(tmp_path)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    assert (
        main(
            [
                "certs",
                "issue",
                str(tmp_path),
                "node7",
                "--role",
                "state",
                "--host",
                "node7.example",
                "--host",
                "10.1.2.3",
            ]
        )
        == 0
    )
    text = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "node7.pem"), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:node7.example" in text and "IP Address:10.1.2.3" in text
    assert main(["certs", "init", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "ca.pem").read_bytes() != ca_before


def test_issue_rejects_unknown_role_and_missing_ca(tmp_path: Path) -> None:
    with pytest.raises(certs.CertificateError, match="unknown role"):
        certs.issue(tmp_path, "x", "wizard")
    with pytest.raises(certs.CertificateError, match="no CA in"):
        certs.issue(tmp_path, "x", "agent")


def _serial(settings: TLSSettings) -> int:
    return settings.material.chain[0].get_serial_number()


def test_settings_load_once_and_reload_a_reissued_certificate(tmp_path: Path) -> None:
    certs.ensure_dev_pki(tmp_path, {"agent": "agent"})
    settings = TLSSettings(str(tmp_path / "ca.pem"), str(tmp_path / "agent.pem"), str(tmp_path / "agent.key"))
    server = settings.server({"agent"})
    assert settings.server({"agent"}) is server  # one context per set of admitted roles
    origin = settings.client_creator("localhost", {"origin"})
    assert settings.client_creator("localhost", {"origin"}) is origin  # one per server name and roles
    old_context, old_serial = server.getContext(), _serial(settings)
    old_client = settings.client_creator("localhost", {"origin"})

    certs.issue(tmp_path, "agent", "agent")
    assert _serial(settings) == old_serial  # nothing is read again until asked
    settings.reload()
    assert _serial(settings) != old_serial
    assert server.getContext() is not old_context
    assert settings.client_creator("localhost", {"origin"}) is not old_client


def test_a_failed_reload_keeps_the_old_material(tmp_path: Path) -> None:
    certs.ensure_dev_pki(tmp_path, {"agent": "agent", "other": "agent"})
    settings = TLSSettings(str(tmp_path / "ca.pem"), str(tmp_path / "agent.pem"), str(tmp_path / "agent.key"))
    context, serial = settings.server().getContext(), _serial(settings)
    (tmp_path / "agent.key").write_bytes((tmp_path / "other.key").read_bytes())  # key of another cert
    with pytest.raises(TLSConfigError, match="cannot load tls files"):
        settings.reload()
    (tmp_path / "agent.key").write_text("not a key")
    with pytest.raises(TLSConfigError, match="cannot load tls files"):
        settings.reload()
    assert _serial(settings) == serial and settings.server().getContext() is context
