"""``kraken state`` against a running kraken-state: nodes, get, set, graph (JSON and dot), freeze, thaw."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.state_rig import PARENT_ID, client, state_config, wait_for
from tests.support import REPO, ServerProcess, _env

N1 = "ffffffff-0000-0000-0000-000000000001"


def cli(pki: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "kraken.cli",
            "state",
            "--url",
            f"https://127.0.0.1:{port}",
            "--pki",
            str(pki),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env=_env(),
    )


def test_cli_round_trip(pki: Path, tmp_path: Path, servers: ServerProcess.Pool) -> None:
    proc = servers.start("kraken-state", state_config(pki, tmp_path), name="engine")
    port = proc.port("http")
    api = client(pki, proc)
    api.post("/cfg/node", {"id": N1, "nodename": "sim1", "platform": "sim", "parentId": PARENT_ID})

    out = cli(pki, port, "nodes")
    assert out.returncode == 0, out.stderr
    assert "sim1" in out.stdout and "PHYSSTATE" in out.stdout.splitlines()[0]

    out = cli(pki, port, "set", "sim1", "physState=POWER_ON", "/RunState=SYNC", "arch=amd64")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["runState"] == "SYNC"
    wait_for(lambda: api.get(f"/dsc/node/{N1}")["runState"] == "SYNC", what="the node to converge")
    got = json.loads(cli(pki, port, "get", N1, "--dsc").stdout)
    assert got["physState"] == "POWER_ON"

    dot = cli(pki, port, "graph", "--node", "sim1", "--dot")
    assert dot.returncode == 0 and dot.stdout.startswith("digraph mutations {") and "sim/BOOT" in dot.stdout
    whole = json.loads(cli(pki, port, "graph").stdout)
    assert whole["nodes"] and whole["edges"]

    assert json.loads(cli(pki, port, "freeze").stdout) == {"frozen": True}
    assert api.get("/sme/frozen") == {"frozen": True}
    assert json.loads(cli(pki, port, "thaw").stdout) == {"frozen": False}

    bad = cli(pki, port, "set", "sim1", "physState=TEPID")
    assert bad.returncode == 1 and "400 BAD_NODE" in bad.stderr and "TEPID" in bad.stderr
    missing = cli(pki, port, "get", "nobody")
    assert missing.returncode == 1 and "no node named 'nobody'" in missing.stderr
    nowhere = cli(pki, 1, "nodes")
    assert nowhere.returncode == 1 and "cannot reach" in nowhere.stderr
