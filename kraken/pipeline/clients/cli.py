"""Command-line client (``OctopusClientCliRambo``): runs an allowed program without a shell.

Prepared arguments: ``{"command": "ls", "args": [...], "input": "text for stdin"}``; the
command must be listed in the server's ``pipeline.cli_commands``. Call config:
``split_by_newline``. Result ``{"status": 0, "out": ...}``; a non-zero exit is a
:class:`ClientError` carrying status, out and err.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IReactorProcess

from kraken.pipeline.clients.base import Client, ClientError

MAX_OUTPUT = 4 * 1024 * 1024


class _Collect(protocol.ProcessProtocol):
    def __init__(self, done: defer.Deferred[Any], stdin: bytes) -> None:
        self.done, self.stdin = done, stdin
        self.out, self.err = bytearray(), bytearray()

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self.stdin:
            self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        if len(self.out) < MAX_OUTPUT:
            self.out += data

    def errReceived(self, data: bytes) -> None:
        if len(self.err) < MAX_OUTPUT:
            self.err += data

    def processEnded(self, reason: Any) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.done.callback(code if code is not None else -1)


class CliClient(Client):
    def call(self, prepared: Any, config: dict[str, Any]) -> Any:
        if not isinstance(prepared, dict) or not isinstance(prepared.get("command"), str):
            raise ValueError('the CLI client expects {"command": "...", "args": [...]}')
        command = prepared["command"]
        if command not in self.ctx.cli_commands:
            raise PermissionError(f"command {command!r} is not in pipeline.cli_commands")
        args = prepared.get("args") or []
        if not isinstance(args, list):
            raise ValueError("args must be a list")
        executable = shutil.which(command)
        if executable is None:
            raise FileNotFoundError(f"command {command!r} not found")
        stdin = prepared.get("input")
        data = stdin.encode("utf-8") if isinstance(stdin, str) else b""
        done: defer.Deferred[Any] = defer.Deferred()
        proto = _Collect(done, data)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        IReactorProcess(self.ctx.reactor).spawnProcess(proto, executable, [command, *map(str, args)], env=env)
        split = bool(config.get("split_by_newline"))

        def finished(code: int) -> Any:
            out: Any = proto.out.decode("utf-8", "replace")
            if split:
                out = [line for line in out.split("\n") if line]
            if code != 0:
                err = proto.err.decode("utf-8", "replace")
                return ClientError(
                    {"status": code, "out": out, "err": err}, f"exit status {code}: {err.strip()}"
                )
            return {"status": 0, "out": out}

        return done.addCallback(finished)
