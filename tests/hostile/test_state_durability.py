"""kill -9 right after every acknowledged write of kraken-state: the write is still there."""

from __future__ import annotations

import json
from pathlib import Path

from tests.hostile.rig import call
from tests.integration.state_rig import state_config
from tests.support import ServerProcess


def node_id(i: int) -> str:
    return f"eeeeeeee-0000-0000-0000-{i:012d}"


def test_acknowledged_rest_writes_survive_kill_9(
    pki: Path, tmp_path: Path, servers: ServerProcess.Pool
) -> None:
    proc = servers.start("kraken-state", state_config(pki, tmp_path, freeze=True), name="state")

    def write_then_kill(method: str, path: str, body: object, expect: int) -> None:
        raw = json.dumps(body).encode() if body is not None else None
        status, answer = call(pki, proc.port("http"), method, path, raw)
        assert status == expect, answer
        proc.kill()  # at once: no time for a late flush
        proc.start()

    for i in range(3):
        nid = node_id(i)
        write_then_kill("POST", "/cfg/node", {"id": nid, "nodename": f"n{i}"}, 201)
        assert call(pki, proc.port("http"), "GET", f"/cfg/node/{nid}")[1]["nodename"] == f"n{i}"

        write_then_kill("PUT", f"/cfg/node/{nid}", {"id": nid, "nodename": f"renamed{i}"}, 200)
        assert call(pki, proc.port("http"), "GET", f"/cfg/node/{nid}")[1]["nodename"] == f"renamed{i}"

        bulk = [{"id": node_id(100 + 10 * i + k)} for k in range(3)]
        write_then_kill("POST", "/cfg/nodes", {"nodes": bulk}, 201)
        stored = {n["id"] for n in call(pki, proc.port("http"), "GET", "/cfg/nodes")[1]["nodes"]}
        assert {n["id"] for n in bulk} <= stored

        write_then_kill("DELETE", f"/cfg/node/{nid}", None, 200)
        assert call(pki, proc.port("http"), "GET", f"/cfg/node/{nid}")[0] == 404
