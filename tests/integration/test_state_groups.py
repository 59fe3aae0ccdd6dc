"""Groups and bulk operations on a real kraken-state: a group made with the CLI, a bulk
``set --group`` with its progress bar on a terminal and OPERATION events on the websocket,
the refusal to set without a node or group, and groups kept across a restart."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread

from kraken.core.endpoints import connect
from tests.integration.state_rig import PARENT_ID, client, state_config
from tests.integration.test_state_api import Listener, _until
from tests.support import REPO, ServerProcess, _env, tls_settings

NODES = [f"dddddddd-0000-0000-0000-{i:012d}" for i in range(20)]


def cli(pki: Path, port: int, *args: str, tty: bool = False) -> tuple[int, str, str]:
    """Run ``kraken state ARGS``; with *tty* its stderr is a terminal (so it draws its bar)."""
    command = [sys.executable, "-m", "kraken.cli", "state", "--url", f"https://127.0.0.1:{port}",
               "--pki", str(pki), *args]
    if not tty:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO, env=_env())
        return out.returncode, out.stdout, out.stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=slave, cwd=REPO, env=_env(), text=True)
    os.close(slave)
    screen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    stdout = proc.stdout.read() if proc.stdout else ""
    proc.wait(60)
    os.close(master)
    return proc.returncode, stdout, screen.decode(errors="replace")


@pytest_twisted.inlineCallbacks
def test_bulk_group_power_with_progress(pki: Path, tmp_path: Path, servers: ServerProcess.Pool) -> Any:
    config = state_config(pki, tmp_path, module_config={"sim": {"latency": 0.2, "timeout": 5}})
    proc = servers.start("kraken-state", config, name="engine")
    api, port = client(pki, proc), proc.port("http")
    nodes = [
        {"id": n, "nodename": f"n{i}", "platform": "sim", "parentId": PARENT_ID} for i, n in enumerate(NODES)
    ]
    yield deferToThread(api.post, "/cfg/nodes", {"nodes": nodes})
    extra = {"id": "dddddddd-0000-0000-0000-00000000ffff", "platform": "sim", "parentId": PARENT_ID}
    yield deferToThread(api.post, "/cfg/node", extra)

    code, out, err = yield deferToThread(
        cli, pki, port, "group", "rack", "arch=amd64", "--nodes", ",".join(f"n{i}" for i in range(20))
    )
    assert code == 0, err
    assert json.loads(out)["nodes"] == sorted(NODES)
    code, out, err = yield deferToThread(cli, pki, port, "set", "physState=POWER_ON")
    assert code == 2 and "refusing to change every node" in err

    factory = WebSocketClientFactory(f"ws://127.0.0.1:{proc.port('ws')}/ws")
    factory.protocol = Listener
    factory.opened, factory.messages, factory.waiting = defer.Deferred(), [], None
    yield connect(reactor, "127.0.0.1", proc.port("ws"), factory, tls_settings(pki, "client"), ["state"])
    ws = yield factory.opened
    ws.sendMessage(b'{"command": "SUBSCRIBE", "type": "OPERATION"}')
    yield deferToThread(lambda: __import__("time").sleep(0.3))

    code, out, screen = yield deferToThread(
        cli, pki, port, "set", "--group", "rack", "physState=POWER_ON", "/RunState=SYNC", tty=True
    )
    assert code == 0, screen
    result = json.loads(out)
    assert result["complete"] and result["done"] == result["total"] == 20 and result["failed"] == 0
    assert "[" + "#" * 30 + "]  20/20 nodes" in screen
    for n in NODES:
        dsc = yield deferToThread(api.get, f"/dsc/node/{n}")
        assert dsc["physState"] == "POWER_ON" and dsc["runState"] == "SYNC"
    other = yield deferToThread(api.get, f"/cfg/node/{extra['id']}")
    assert other["physState"] == "PHYS_UNKNOWN"  # not in the group: untouched

    yield _until(factory, lambda: any(m["type"] == 7 and m["value"]["complete"] for m in factory.messages))
    progress = [m["value"] for m in factory.messages if m["type"] == 7]
    assert progress[0]["done"] == 0 and progress[0]["total"] == 20 and progress[-1]["done"] == 20
    assert progress[-1]["values"] == {"/PhysState": "POWER_ON", "/RunState": "SYNC"}
    assert progress[-1]["group"] == "rack"
    ws.sendClose()

    proc.stop()
    proc.start()
    api = client(pki, proc)
    group = yield deferToThread(api.get, "/group/rack")
    assert group["values"] == {"/Arch": "amd64", "/PhysState": "POWER_ON", "/RunState": "SYNC"}
    assert group["nodes"] == sorted(NODES)
