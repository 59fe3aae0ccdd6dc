"""Secret references: resolution rules, limits and redaction (no reactor)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kraken.pipeline.secretrefs import MAX_SECRET_BYTES, SecretError, SecretPolicy, resolve


def test_resolves_env_and_file_inside_strings_keys_and_lists(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("from-file\r\n")
    policy = SecretPolicy(("APP_*",), (str(tmp_path),), {"APP_TOKEN": "s3cret", "OTHER": "x"})
    ref = "${file:" + str(tmp_path / "k") + "}"
    config = {
        "headers": {"Authorization": "Bearer ${env:APP_TOKEN}", "${env:APP_TOKEN}": 1},
        "list": [ref, 5, None],
        "plain": "no $ {reference} here",
    }
    resolved, secrets = resolve(config, policy)
    assert resolved == {
        "headers": {"Authorization": "Bearer s3cret", "s3cret": 1},
        "list": ["from-file", 5, None],
        "plain": "no $ {reference} here",
    }
    assert secrets.redact(resolved) == config
    assert secrets.text("failed: s3cret and from-file") == f"failed: ${{env:APP_TOKEN}} and {ref}"


def test_refusals_name_the_reference_never_a_value(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("nope")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "big").write_bytes(b"a" * (MAX_SECRET_BYTES + 1))
    (allowed / "link").symlink_to(outside)
    policy = SecretPolicy(("APP_*",), (str(allowed),), {"HOME": "/root"})
    cases = {
        "${env:HOME}": "not allowed by pipeline.secret_env",
        "${env:APP_MISSING}": "is not set",
        f"${{file:{outside}}}": "pipeline.secret_files",
        f"${{file:{allowed}/link}}": "pipeline.secret_files",  # symlinks are followed first
        f"${{file:{allowed}/../outside}}": "pipeline.secret_files",
        "${file:relative}": "must be absolute",
        f"${{file:{allowed}/big}}": "larger than",
        f"${{file:{allowed}/none}}": "cannot read it",
    }
    for reference, message in cases.items():
        with pytest.raises(SecretError) as e:
            resolve({"x": reference}, policy)
        assert message in str(e.value) and reference in str(e.value)
        assert "/root" not in str(e.value) and "nope" not in str(e.value)


def test_nothing_allowed_by_default() -> None:
    with pytest.raises(SecretError):
        resolve("${env:PATH}", SecretPolicy())
    assert resolve({"a": "${nothing}"}, SecretPolicy())[0] == {"a": "${nothing}"}
