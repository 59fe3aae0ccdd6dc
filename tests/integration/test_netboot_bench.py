"""The netboot benchmark runs end to end on a small shape (slow, root: namespaces and tc)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support import REPO, _env

pytestmark = [pytest.mark.slow, pytest.mark.root]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_the_swarm_beats_one_server_for_a_small_cluster() -> None:
    run = subprocess.run(
        [sys.executable, "benchmarks/netboot.py", "--nodes", "4", "--size-mb", "16", "--rate-mbit", "50"],
        capture_output=True, text=True, cwd=REPO, env=_env(), timeout=900,
    )
    found = re.search(r"(\d+)% of ideal .* single server / kraken = ([\d.]+)x", run.stdout)
    assert found, run.stdout + run.stderr
    efficiency, ratio = int(found.group(1)), float(found.group(2))
    assert efficiency >= 50 and ratio > 1.5, run.stdout
