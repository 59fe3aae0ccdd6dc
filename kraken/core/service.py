"""The root service every kraken server builds: listeners, metrics, logging, port file.

A server's ``makeService`` creates a :class:`KrakenService` from its validated config, adds
listeners with :meth:`KrakenService.listen` and its own child services, and returns it.
Once every listener is bound the service writes ``{"name": port, ...}`` to ``port_file``
when configured, which is how tests find servers started on port 0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import ILogObserver, Logger
from twisted.python import log as legacy_log
from twisted.python.components import Componentized

from kraken.core.endpoints import server_endpoint
from kraken.core.logging import LogControl, open_log_file
from kraken.core.metrics import Metrics
from kraken.core.tls import TLSSettings

log = Logger(namespace="kraken.service")


class KrakenService(MultiService):
    """A server's root service; ``ports`` maps listener names to bound ports once running."""

    def __init__(self, server: str, config: dict[str, Any], reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.setName(server)
        self.server = server
        self.config = config
        self.reactor = reactor
        self.metrics = Metrics(server)
        self.tls = TLSSettings.from_config(config.get("tls"))
        self.log_control = LogControl(config.get("log", {}).get("level", "info"))
        self.ports: dict[str, int] = {}
        self._listeners: list[tuple[str, StreamServerEndpointService]] = []

    def setServiceParent(self, parent: Any) -> None:
        super().setServiceParent(parent)
        if isinstance(parent, Componentized):
            # twistd asks the application for its log observer when no --logger is given.
            cfg = self.config.get("log", {})
            observer = self.log_control.observer(cfg.get("format", "text"), open_log_file(cfg.get("file")))
            parent.setComponent(ILogObserver, observer)
            parent.setComponent(legacy_log.ILogObserver, observer)

    def listen(
        self,
        name: str,
        description: str,
        factory: IProtocolFactory,
        allowed_roles: Iterable[str] | None = None,
    ) -> StreamServerEndpointService:
        """Listen on *description* (``tls:`` prefix for mutual TLS admitting *allowed_roles*)."""
        endpoint, wrapped = server_endpoint(self.reactor, description, factory, self.tls, allowed_roles)
        svc = StreamServerEndpointService(endpoint, wrapped)
        svc._raiseSynchronously = True
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

    def startService(self) -> None:
        super().startService()
        waits: list[Deferred[Any]] = []
        for name, svc in self._listeners:
            d = svc._waitingForPort
            if d is None:
                continue
            d.addCallback(self._bound, name)
            waits.append(d)
        DeferredList(waits, consumeErrors=True).addCallback(self._all_bound)

    def _bound(self, port: Any, name: str) -> Any:
        number = getattr(port.getHost(), "port", None)
        if number is not None:
            self.ports.setdefault(name, number)
            log.info(
                "{server} listening for {name} on port {port}", server=self.server, name=name, port=number
            )
        return port

    def _all_bound(self, _: Any) -> None:
        path = self.config.get("port_file")
        if not path:
            return
        tmp = Path(path).with_name(Path(path).name + ".tmp")
        tmp.write_text(json.dumps(self.ports))
        os.replace(tmp, path)
