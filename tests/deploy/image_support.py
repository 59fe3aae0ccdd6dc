"""Helpers of the slow deploy tests: the built image's layout and a command that must succeed."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

Result = subprocess.CompletedProcess[str]


@dataclass(frozen=True)
class Layout:
    path: Path
    tag: str

    @property
    def manifest_digest(self) -> str:
        index = json.loads((self.path / "index.json").read_text())
        return str(index["manifests"][0]["digest"])


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Result:
    result = subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result
