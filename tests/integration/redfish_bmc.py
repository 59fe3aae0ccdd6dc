"""A Redfish BMC for tests: sushy-tools' emulator with its fake driver (no libvirt), started as a
real process on 127.0.0.1 with a bcrypt htpasswd file, one or more fake systems."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import Any

from tests.support import free_port

EMULATOR = shutil.which("sushy-emulator") or str(Path(sys.executable).with_name("sushy-emulator"))
USER, PASSWORD = "admin", "secret"


def fake_system(uuid: str, name: str, mac: str, power: str = "Off") -> dict[str, Any]:
    return {"uuid": uuid, "name": name, "power_state": power, "nics": [{"mac": mac, "ip": "192.0.2.1"}]}


def consecutive_ports(count: int) -> int:
    """The first of *count* consecutive loopback ports free right now (for a scanned range)."""
    for _ in range(50):
        first = free_port()
        sockets = []
        try:
            for port in range(first, first + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports")


class RedfishBmc:
    def __init__(self, directory: Path, systems: list[dict[str, Any]], port: int | None = None) -> None:
        self.dir = directory
        self.systems = systems
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedfishBmc:
        import bcrypt

        self.dir.mkdir(parents=True, exist_ok=True)
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
        (self.dir / "htpasswd").write_text(f"{USER}:{hashed}\n")
        config = self.dir / "emulator.py"
        config.write_text(
            "SUSHY_EMULATOR_FAKE_DRIVER = True\n"
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
            f"SUSHY_EMULATOR_LISTEN_PORT = {self.port}\n"
            f"SUSHY_EMULATOR_STATE_DIR = {str(self.dir / 'state')!r}\n"
            f"SUSHY_EMULATOR_AUTH_FILE = {str(self.dir / 'htpasswd')!r}\n"
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = {json.dumps(self.systems)}\n"
        )
        log = open(self.dir / "emulator.log", "ab")
        self.proc = subprocess.Popen(
            [EMULATOR, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sushy-emulator exited: {(self.dir / 'emulator.log').read_text()}")
            try:
                self.get("/redfish/v1/Systems")
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sushy-emulator did not answer")

    def get(self, path: str, password: str = PASSWORD) -> Any:
        """An independent read of the BMC (plain HTTP, not through sushy)."""
        req = urllib.request.Request(self.url + path)
        req.add_header("Authorization", "Basic " + b64encode(f"{USER}:{password}".encode()).decode())
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def power(self, uuid: str) -> str:
        return str(self.get(f"/redfish/v1/Systems/{uuid}")["PowerState"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def have_emulator() -> bool:
    try:
        import bcrypt  # noqa: F401
    except ImportError:
        return False
    return Path(EMULATOR).exists()


__all__ = ["PASSWORD", "USER", "RedfishBmc", "consecutive_ports", "fake_system", "have_emulator"]
