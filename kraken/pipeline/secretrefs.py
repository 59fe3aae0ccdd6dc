"""Secret references in client ``start`` options: ``${env:NAME}`` and ``${file:/path}``.

References are resolved when a service starts (never at define time, so definitions, the
SQLite store and the project folder hold only the reference). The resolved values are kept
in a :class:`Secrets` that redacts them: wherever a value could leave the server (the client
state the API shows, start and call errors, log lines) it is replaced by its reference text.

Which variables and files may be read is configured (``pipeline.secret_env``: name patterns;
``pipeline.secret_files``: folders); nothing is allowed by default, since whoever can define
a service could otherwise send any file of the server to an allowed destination.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REFERENCE = re.compile(r"\$\{(env|file):([^}]*)\}")
MAX_SECRET_BYTES = 64 * 1024
MAX_SECRETS = 256


class SecretError(Exception):
    """A reference that cannot be resolved; the message names the reference, never a value."""


@dataclass(frozen=True)
class SecretPolicy:
    env_patterns: tuple[str, ...] = ()
    file_dirs: tuple[str, ...] = ()
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def env(self, name: str) -> str:
        if not any(fnmatch.fnmatchcase(name, p) for p in self.env_patterns):
            raise SecretError(f"${{env:{name}}}: the variable is not allowed by pipeline.secret_env")
        value = self.environ.get(name)
        if value is None:
            raise SecretError(f"${{env:{name}}}: the variable is not set")
        return value

    def file(self, name: str) -> str:
        path = Path(name)
        if not path.is_absolute():
            raise SecretError(f"${{file:{name}}}: the path must be absolute")
        real = Path(os.path.realpath(path))
        allowed = [Path(os.path.realpath(d)) for d in self.file_dirs]
        if not any(real == d or d in real.parents for d in allowed):
            raise SecretError(f"${{file:{name}}}: the file is not under a folder of pipeline.secret_files")
        try:
            with open(real, "rb") as f:
                data = f.read(MAX_SECRET_BYTES + 1)
        except OSError as e:
            raise SecretError(f"${{file:{name}}}: cannot read it ({e.strerror})") from None
        if len(data) > MAX_SECRET_BYTES:
            raise SecretError(f"${{file:{name}}}: larger than {MAX_SECRET_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SecretError(f"${{file:{name}}}: not UTF-8 text") from None
        return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


class Secrets:
    """The secret values one started service holds, and how to hide them."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        # longest first, so a secret containing another is replaced whole
        self.values = dict(sorted((values or {}).items(), key=lambda kv: -len(kv[0])))

    def __bool__(self) -> bool:
        return bool(self.values)

    def text(self, text: str) -> str:
        for value, reference in self.values.items():
            if value in text:
                text = text.replace(value, reference)
        return text

    def redact(self, value: Any) -> Any:
        """*value* (JSON) with every secret replaced by its reference, keys included."""
        if not self.values:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.redact(k): self.redact(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact(v) for v in value]
        return value


NO_SECRETS = Secrets()


def resolve(config: Any, policy: SecretPolicy) -> tuple[Any, Secrets]:
    """*config* with every reference in its strings replaced, and the values it used."""
    found: dict[str, str] = {}

    def substitute(match: re.Match[str]) -> str:
        kind, name = match.group(1), match.group(2)
        value = policy.env(name) if kind == "env" else policy.file(name)
        if value:
            found[value] = match.group(0)
        if len(found) > MAX_SECRETS:
            raise SecretError(f"more than {MAX_SECRETS} secrets in one start config")
        return value

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return REFERENCE.sub(substitute, value) if "${" in value else value
        if isinstance(value, dict):
            return {walk(k): walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(config), Secrets(found)
