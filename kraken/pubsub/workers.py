"""``workers: N``: one kraken-pubsub process per core on one host, as one server.

The process twistd starts is worker 0. It runs workers 1..N-1 as child ``twistd`` processes
with the same config file and command-line settings, and the processes form a cluster
(:mod:`kraken.pubsub.cluster`) over mutual TLS on loopback ports picked at start. The public
listeners must be ``reuseport:`` entries, which every worker binds: the kernel spreads the
connections. Other listeners (the admin API, a plain ``tcp:`` entry) stay with worker 0.
A worker that exits is started again after ``restart_delay``; stopping worker 0 stops them.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.core.config import ConfigError
from kraken.core.endpoints import REUSEPORT_PREFIX, TLS_PREFIX
from kraken.core.reactor import IServerReactor

log = Logger(namespace="kraken.pubsub.workers")


def shared(entries: Sequence[str]) -> list[str]:
    """The ``reuseport:`` entries (behind ``tls:`` or not): the ones every worker binds."""
    return [e for e in entries if e.removeprefix(TLS_PREFIX).startswith(REUSEPORT_PREFIX)]


def loopback_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass(frozen=True)
class Plan:
    """Who is who: the cluster members (worker 0 first) and what each worker listens on."""

    members: list[str]
    listen: list[str]  # a worker's public listeners (shared)
    websocket_listen: list[str]

    @classmethod
    def make(cls, workers: int, listen: Sequence[str], websocket_listen: Sequence[str]) -> Plan:
        public = shared(listen)
        if not public:
            raise ConfigError("pubsub.workers: listen needs reuseport: entries, which every worker binds")
        members = [f"127.0.0.1:{port}" for port in loopback_ports(workers)]
        return cls(members, public, shared(websocket_listen))

    def peer_listener(self, worker: int) -> str:
        return f"{TLS_PREFIX}tcp:{self.members[worker].rpartition(':')[2]}:interface=127.0.0.1"

    def child_settings(self, worker: int, port_file: str) -> list[str]:
        """``--set`` arguments turning worker 0's command line into worker *worker*'s."""
        settings = {
            "pubsub.workers": "1",
            "pubsub.cluster_self": self.members[worker],
            "pubsub.cluster_members": json.dumps(self.members),
            "listen": json.dumps([*self.listen, self.peer_listener(worker)]),
            "pubsub.websocket_listen": json.dumps(self.websocket_listen),
            "pubsub.admin_listen": json.dumps(["tcp:0:interface=127.0.0.1"]),
            "port_file": port_file,
        }
        return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


class _Worker(ProcessProtocol):
    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.ended: Deferred[None] = Deferred()

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self.supervisor.ended(self, reason)


class WorkerSupervisor(Service):
    def __init__(
        self,
        reactor: IServerReactor,
        plan: Plan,
        base_args: list[str],
        restart_delay: float = 1.0,
    ) -> None:
        self.reactor = reactor
        self.plan = plan
        self.base_args = base_args
        self.restart_delay = restart_delay
        self.workdir = ""
        self.processes: dict[int, tuple[_Worker, IProcessTransport]] = {}
        self._restarts: dict[int, IDelayedCall] = {}

    def startService(self) -> None:
        super().startService()
        self.workdir = tempfile.mkdtemp(prefix="kraken-pubsub-workers-")
        for index in range(1, len(self.plan.members)):
            self.spawn(index)

    def spawn(self, index: int) -> None:
        self._restarts.pop(index, None)
        if not self.running:
            return
        port_file = f"{self.workdir}/worker-{index}.json"
        twistd = "from twisted.scripts.twistd import run; run()"
        args = [sys.executable, "-c", twistd, "--pidfile=", "-n", "kraken-pubsub", *self.base_args]
        args += self.plan.child_settings(index, port_file)
        worker = _Worker(self, index)
        transport = self.reactor.spawnProcess(  # type: ignore[attr-defined]
            worker, sys.executable, args, env=None, childFDs={0: "w", 1: 1, 2: 2}
        )
        self.processes[index] = (worker, transport)
        log.info("started pub/sub worker {index} (pid {pid})", index=index, pid=transport.pid)

    def ended(self, worker: _Worker, reason: Failure) -> None:
        current = self.processes.get(worker.index)
        if current is None or current[0] is not worker:
            return
        del self.processes[worker.index]
        if self.running:
            log.warn(
                "pub/sub worker {index} exited ({why}); starting it again in {delay} s",
                index=worker.index,
                why=reason.getErrorMessage(),
                delay=self.restart_delay,
            )
            restart = self.reactor.callLater(self.restart_delay, self.spawn, worker.index)
            self._restarts[worker.index] = restart

    def stopService(self) -> Deferred[object]:
        super().stopService()
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        waits = []
        for worker, transport in self.processes.values():
            waits.append(worker.ended)
            try:
                transport.signalProcess("TERM")
            except ProcessExitedAlready:
                pass
            self.reactor.callLater(10, self._kill, transport)
        done: Deferred[object] = DeferredList(waits).addBoth(self._cleaned)
        return done

    def _kill(self, transport: IProcessTransport) -> None:
        if transport.pid is not None:
            transport.signalProcess("KILL")

    def _cleaned(self, result: object) -> object:
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return result
