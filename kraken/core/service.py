"""The root service every kraken server builds: listeners, metrics, logging, port file, TLS.

A server's ``makeService`` creates a :class:`KrakenService` from its validated config, adds
listeners with :meth:`KrakenService.listen` and its own child services, and returns it.
Once every listener is bound the service writes ``{"name": port, ...}`` to ``port_file``
when configured, which is how tests find servers started on port 0. While it runs, SIGHUP
reloads the TLS certificate, key and CA from their files.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import ILogObserver, Logger
from twisted.python import log as legacy_log
from twisted.python.components import Componentized
from twisted.python.failure import Failure

from kraken.core.config import ConfigError, ServerConfig
from kraken.core.endpoints import server_endpoint
from kraken.core.heap import tune_gc
from kraken.core.logging import LogControl, open_log_file
from kraken.core.metrics import Metrics
from kraken.core.reactor import IServerReactor, default_reactor
from kraken.core.tls import TLSConfigError, TLSSettings

log = Logger(namespace="kraken.service")
SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def raise_open_files_limit(server: str) -> None:
    """Raise the soft limit of open files to the hard one, so that a flood of connections meets
    the pending-connection caps before it meets EMFILE; log both limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:  # the kernel's per-process ceiling then
        nr_open = Path("/proc/sys/fs/nr_open")
        target = int(nr_open.read_text()) if nr_open.exists() else soft
    if soft != target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            log.warn(
                "{server}: open files limit stays at {soft} (hard limit {hard}): {e}",
                server=server, soft=soft, hard=hard, e=e,
            )
            return
    log.info(
        "{server}: open files limit {new} (soft was {soft}, hard {hard})",
        server=server, new=target, soft=soft, hard=hard,
    )


class Listener(Service):
    """One endpoint to listen on while running; ``bound`` fires with its port.

    Listening starts in ``privilegedStartService`` (before twistd drops privileges); an endpoint
    that fails at once (port taken, bad interface) raises there, so twistd exits with the error.
    """

    def __init__(self, endpoint: IStreamServerEndpoint, factory: IProtocolFactory) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.port: IListeningPort | None = None
        self.listening: Deferred[IListeningPort] | None = None
        self._waiters: list[Deferred[IListeningPort]] = []

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        if self.listening is None:
            self._listen()

    def _listen(self) -> None:
        failed_now: list[Failure] = []
        self.listening = self.endpoint.listen(self.factory)
        self.listening.addCallbacks(self._bound, failed_now.append)
        if failed_now:
            failed_now[0].raiseException()
        self.listening.addErrback(self._failed_later)

    def _bound(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(port)
        return port

    def _failed_later(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            log.failure("listening failed", failure)

    def bound(self) -> Deferred[IListeningPort]:
        """Fires with the port once listening (at once if it is already)."""
        if self.port is not None:
            return succeed(self.port)
        waiter: Deferred[IListeningPort] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        listening, self.listening = self.listening, None
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        if listening is not None:
            listening.cancel()
        return None


class KrakenService(MultiService):
    """A server's root service; ``ports`` maps listener names to bound ports once running."""

    def __init__(self, server: str, config: ServerConfig, reactor: IServerReactor | None = None) -> None:
        super().__init__()
        self.setName(server)
        self.server = server
        self.config = config
        self.reactor = reactor if reactor is not None else default_reactor()
        self.metrics = Metrics(server)
        self.tls = TLSSettings.from_config(config.tls)
        self.log_control = LogControl(config.log.level)
        self.ports: dict[str, int] = {}
        self._listeners: list[tuple[str, Listener]] = []
        self._previous_sighup: list[SignalHandler] = []  # while our SIGHUP handler is installed
        self.reload_hooks: list[Callable[[], None]] = []  # run on SIGHUP after the TLS files

    def setServiceParent(self, parent: Any) -> None:
        super().setServiceParent(parent)
        if isinstance(parent, Componentized):
            # twistd asks the application for its log observer when no --logger is given.
            observer = self.log_control.observer(self.config.log.format, open_log_file(self.config.log.file))
            parent.setComponent(ILogObserver, observer)
            parent.setComponent(legacy_log.ILogObserver, observer)

    def listen(
        self,
        name: str,
        description: str,
        factory: IProtocolFactory,
        allowed_roles: Iterable[str] | None = None,
    ) -> Listener:
        """Listen on *description* (``tls:`` prefix for mutual TLS admitting *allowed_roles*)."""
        endpoint, wrapped = server_endpoint(
            self.reactor, description, factory, self.tls, allowed_roles, self.metrics.connections_aborted
        )
        svc = Listener(endpoint, wrapped)
        svc.setName(f"listener:{name}:{len(self._listeners)}")
        svc.setServiceParent(self)
        self._listeners.append((name, svc))
        return svc

    def listen_all(
        self,
        name: str,
        descriptions: Iterable[str],
        factory: IProtocolFactory,
        allowed_roles: Iterable[str] | None = None,
    ) -> None:
        for description in descriptions:
            self.listen(name, description, factory, allowed_roles)

    def privilegedStartService(self) -> None:
        raise_open_files_limit(self.server)
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        tune_gc()
        reloads = self.tls is not None or self.reload_hooks
        if reloads and threading.current_thread() is threading.main_thread():
            self._previous_sighup = [signal.signal(signal.SIGHUP, self._on_sighup)]
        waits = [svc.bound().addCallback(self._bound, name) for name, svc in self._listeners]
        DeferredList(waits, consumeErrors=True).addCallback(self._all_bound)

    def stopService(self) -> Deferred[None] | None:
        for previous in self._previous_sighup:
            signal.signal(signal.SIGHUP, previous)
        self._previous_sighup = []
        return super().stopService()

    def _on_sighup(self, signum: int, frame: FrameType | None) -> None:
        self.reactor.callFromThread(self.reload)

    def on_config_reload(self, reread: Callable[[], Any], apply: Callable[[Any], None]) -> None:
        """On SIGHUP, *apply* the configuration *reread* returns; one that does not parse is logged
        and the running one kept."""

        def hook() -> None:
            try:
                config = reread()
            except ConfigError as e:
                log.error("{server}: config reload refused, keeping the running settings: {e}",
                          server=self.server, e=e)
                return
            apply(config)

        self.reload_hooks.append(hook)

    def reload(self) -> None:
        """SIGHUP: the TLS files, then every reload hook (each logs its own failure)."""
        self.reload_tls()
        for hook in self.reload_hooks:
            try:
                hook()
            except Exception:
                log.failure("{server}: reload failed", server=self.server)

    def reload_tls(self) -> None:
        """Read the TLS files again for new connections; on failure log and keep the old ones."""
        if self.tls is None:
            return
        try:
            self.tls.reload()
        except TLSConfigError as e:
            log.error(
                "{server}: TLS reload failed, keeping the old certificate: {e}", server=self.server, e=e
            )
            return
        log.info("{server}: TLS certificate reloaded from {cert}", server=self.server, cert=self.tls.cert)

    def _bound(self, port: IListeningPort, name: str) -> IListeningPort:
        number = getattr(port.getHost(), "port", None)
        if number is not None:
            self.ports.setdefault(name, number)
            log.info(
                "{server} listening for {name} on port {port}", server=self.server, name=name, port=number
            )
        return port

    def _all_bound(self, _: Any) -> None:
        path = self.config.port_file
        if not path:
            return
        tmp = Path(path).with_name(Path(path).name + ".tmp")
        tmp.write_text(json.dumps(self.ports))
        os.replace(tmp, path)
