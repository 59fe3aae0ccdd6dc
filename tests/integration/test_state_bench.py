"""The convergence benchmark as a (slow) test: 10,000 simulated nodes must converge in under 10 s."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import REPO, _env


@pytest.mark.slow
def test_ten_thousand_nodes_converge_within_target() -> None:
    out = subprocess.run(
        [sys.executable, "benchmarks/state_converge.py", "--nodes", "10000", "--children", "100"],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=REPO,
        env=_env(),
    )
    assert out.returncode == 0, out.stderr
    assert "(met)" in out.stdout, out.stdout
    assert "all children SYNC" in out.stdout
