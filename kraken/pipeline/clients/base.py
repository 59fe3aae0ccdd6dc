"""What every service client is: the base class, its context, and its two kinds of failure.

A client is built per started service from its start config; ``call(prepared, call_config)``
returns a value or a Deferred of one. A client *returns* :class:`ClientError` for failures
that the service's ``error`` step may turn into a result; anything it raises is a call error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IReactorTime

from kraken.core.tls import TLSSettings
from kraken.pipeline.clients.outbound import OutboundPolicy
from kraken.pipeline.refusals import Refusals
from kraken.pipeline.secretrefs import NO_SECRETS, SecretPolicy, Secrets


@dataclass
class ClientError:
    """A failure the client reports as a value (``{:error, reason}`` in the original)."""

    error: Any
    message: str


class ClientStartError(Exception):
    """The client cannot start with this configuration."""


@dataclass
class ClientContext:
    """What clients may use: the reactor, our TLS settings, and the server's safety settings.

    The reactor is typed by what every client needs; the CLI client adapts it to
    ``IReactorProcess``."""

    reactor: IReactorTime
    tls: TLSSettings | None = None
    allow_code: bool = False
    lambda_modules: list[str] = field(default_factory=list)
    cli_commands: list[str] = field(default_factory=list)
    http_timeout: float = 30.0
    refusals: Refusals = field(default_factory=Refusals)
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)  # allows nothing by default
    secret_policy: SecretPolicy = field(default_factory=SecretPolicy)  # reads nothing by default


class Client:
    """Base client; subclasses implement ``call`` and may override ``start``/``stop``."""

    def __init__(self, ctx: ClientContext, service: str) -> None:
        self.ctx = ctx
        self.service = service
        # the secret values of the start config: hide them in anything the client reports
        self.secrets: Secrets = NO_SECRETS

    def start(self, config: dict[str, Any]) -> Any:
        """Start; the returned JSON value is the state shown by the API."""
        return {}

    def stop(self, config: dict[str, Any]) -> Any:
        return None

    def state(self) -> Any:
        return {}

    def call(self, prepared: Any, config: dict[str, Any]) -> Any:
        raise NotImplementedError


ClientFactory = Callable[[ClientContext, str], Client]
