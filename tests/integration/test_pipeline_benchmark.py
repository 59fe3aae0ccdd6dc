"""The throughput benchmark runs and meets its in-process targets (slow: --run-slow)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import REPO, _env


@pytest.mark.slow
def test_benchmark_meets_targets() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/pipeline_throughput.py",
            "--events",
            "5000",
            "--http-events",
            "5000",
            "--calls",
            "100",
        ],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=REPO,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "targets (>= 10,000 events/s in-process, < 20 µs per stage): met" in result.stdout, result.stdout
