"""The agent's preload endpoint: make the local containerd pull an image through this agent.

``GET /preload/tags/<repo:tag>?runtime=containerd&namespace=<containerd namespace>`` runs
``ctr images pull`` against containerd's socket (``registry.containerd_socket``). A kraken
repository is pulled as ``127.0.0.1:<registry port>/<repo>:<tag>`` (plain HTTP), as Uber's
kraken names it; a mirrored one (``<mirror name>/<repo>``) is pulled under its upstream name
(``docker.io/library/alpine:3``) with a ``hosts.toml`` sending the pull to this agent, so
pods that name the image the usual way find it. ``200`` once containerd has the image;
``400`` for a bad tag or runtime, ``429`` while ``MAX_RUNNING`` preloads run, ``500`` with
ctr's message when the pull fails or runs past ``registry.preload_timeout``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from twisted.internet import protocol
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IReactorProcess
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from kraken.core.cas import write_atomically
from kraken.core.http import HTTPError, Router, query_arg
from kraken.core.metrics import Metrics
from kraken.core.reactor import IServerReactor
from kraken.mirror.config import Upstream, upstream_of
from kraken.mirror.hoststoml import hosts_toml
from kraken.registry.errors import RegistryError
from kraken.registry.names import check_name, check_tag

log = Logger(namespace="kraken.mirror.preload")

MAX_RUNNING = 4
MAX_OUTPUT = 64 * 1024
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,75}")


@dataclass(frozen=True)
class PullCommand:
    argv: list[str]
    reference: str  # the image name containerd keeps
    hosts: tuple[str, str] | None = None  # (registry host, hosts.toml text) to write first


def pull_command(ctr: str, socket: str, namespace: str, repo: str, tag: str, registry_port: int,
                 upstreams: dict[str, Upstream], hosts_dir: Path) -> PullCommand:
    """The ``ctr`` command that pulls *repo*:*tag* from this agent into containerd (sans-IO)."""
    base = [ctr, "--address", socket, "--namespace", namespace, "images", "pull"]
    agent = f"127.0.0.1:{registry_port}"
    upstream = upstream_of(upstreams, repo)
    if upstream is None:
        reference = f"{agent}/{repo}:{tag}"
        return PullCommand([*base, "--plain-http", reference], reference)
    upstream_repo = repo[len(upstream.prefix):]
    reference = f"{upstream.host}/{upstream_repo}:{tag}"
    hosts = hosts_toml(upstream.host, upstream.url, f"http://{agent}")
    return PullCommand([*base, "--hosts-dir", str(hosts_dir), reference], reference,
                       (upstream.host, hosts.text))


class _Collect(protocol.ProcessProtocol):
    def __init__(self, done: Deferred[tuple[int | None, bytes]]) -> None:
        self.done = done
        self.output = bytearray()

    def outReceived(self, data: bytes) -> None:
        if len(self.output) < MAX_OUTPUT:
            self.output += data[: MAX_OUTPUT - len(self.output)]

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        code = 0 if reason.check(ProcessDone) else getattr(reason.value, "exitCode", None)
        self.done.callback((code, bytes(self.output)))


Outcome = tuple[int | None, bytes]


def run_process(reactor: IServerReactor, argv: list[str], timeout: float) -> Deferred[Outcome]:
    """Run *argv*; ``(exit code or None when killed, output)``; killed after *timeout* seconds."""
    done: Deferred[tuple[int | None, bytes]] = Deferred()
    collect = _Collect(done)
    transport = IReactorProcess(reactor).spawnProcess(collect, argv[0], argv, env=None)
    timer = reactor.callLater(timeout, transport.signalProcess, "KILL")

    def finished(result: tuple[int | None, bytes]) -> tuple[int | None, bytes]:
        if timer.active():
            timer.cancel()
        return result

    return done.addCallback(finished)


class PreloadAPI:
    def __init__(
        self,
        reactor: IServerReactor,
        registry_port: Callable[[], int],
        upstreams: dict[str, Upstream],
        hosts_dir: Path,
        socket: str,
        ctr: str = "ctr",
        timeout: float = 600.0,
        run: Callable[[list[str], float], Deferred[tuple[int | None, bytes]]] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.m_preloads = (metrics.counter("preloads", "images preloaded into containerd", ["outcome"])
                           if metrics is not None else None)
        self.registry_port = registry_port
        self.upstreams = upstreams
        self.hosts_dir = hosts_dir
        self.socket = socket
        self.ctr = ctr
        self.timeout = timeout
        self.run = run or (lambda argv, t: run_process(reactor, argv, t))
        self.running = 0

    def _count(self, outcome: str) -> None:
        if self.m_preloads is not None:
            self.m_preloads.labels(outcome).inc()

    def register(self, router: Router) -> None:
        router.route("GET", "/preload/tags/{tag:path}", self.preload)

    @inlineCallbacks
    def preload(self, request: Request, tag: str) -> Any:
        repo, sep, name = unquote(tag).rpartition(":")
        try:
            if not sep or "/" in name:
                raise RegistryError("NAME_INVALID", "expected <repository>:<tag>")
            check_name(repo)
            check_tag(name)
        except RegistryError as e:
            raise HTTPError(400, "TAG_INVALID", f"{unquote(tag)[:200]!r}: {e.message}") from None
        runtime = query_arg(request, "runtime", "containerd")
        if runtime != "containerd":
            raise HTTPError(400, "RUNTIME_UNSUPPORTED", f"runtime {runtime!r}: only containerd is supported")
        namespace = query_arg(request, "namespace", "k8s.io") or "k8s.io"
        if not _NAMESPACE.fullmatch(namespace):
            raise HTTPError(400, "NAMESPACE_INVALID", f"bad containerd namespace {namespace[:100]!r}")
        port = self.registry_port()
        if not port:
            raise HTTPError(503, "NO_REGISTRY", "the agent's registry port is not listening "
                            "(registry.listen)")
        if self.running >= MAX_RUNNING:
            raise HTTPError(429, "TOO_MANY_PRELOADS", f"{self.running} preloads are running; retry later",
                            {"Retry-After": "5"})
        command = pull_command(self.ctr, self.socket, namespace, repo, name, port, self.upstreams,
                               self.hosts_dir)
        if command.hosts is not None:
            path = self.hosts_dir / command.hosts[0] / "hosts.toml"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, command.hosts[1].encode(), durable=False)
        self.running += 1
        try:
            code, output = yield self.run(command.argv, self.timeout)
        except Exception as e:
            self._count("failed")
            raise HTTPError(500, "PRELOAD_FAILED", f"running {self.ctr} failed: {e}") from None
        finally:
            self.running -= 1
        self._count("ok" if code == 0 else "failed")
        if code != 0:
            text = output.decode("utf-8", "replace").strip()[-1000:]
            why = "timed out" if code is None else f"exit status {code}"
            log.warn("preload of {ref} failed ({why}): {text}", ref=command.reference, why=why, text=text)
            raise HTTPError(500, "PRELOAD_FAILED",
                            f"containerd pull of {command.reference} failed ({why}): {text}")
        log.info("preloaded {ref} into containerd namespace {ns}", ref=command.reference, ns=namespace)
        return {"image": command.reference, "namespace": namespace, "status": "ok"}
