"""The state server's own REST, websocket and sync services, recorded in its own node."""

from __future__ import annotations

from twisted.application.service import Service

from kraken.state.model import ServiceState
from kraken.state.service import StateService


class OwnServices(Service):
    """Reports the REST, websocket and sync services in our own node (the original never did)."""

    def __init__(self, state: StateService, names: list[str]) -> None:
        self.state = state
        self.names = names

    def _record(self, value: ServiceState) -> None:
        for dsc in (False, True):
            self.state.store.set_values(
                self.state.self_id, [(f"/Services/{name}/State", value) for name in self.names], dsc=dsc
            )

    def startService(self) -> None:
        super().startService()
        self._record(ServiceState.RUN)

    def stopService(self) -> None:
        super().stopService()
        self._record(ServiceState.STOP)
