"""``twistd -n kraken-pipeline --config etc/pipeline.yaml``: the flow-pipeline server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kraken.core.config import KrakenOptions, ServerConfig, listen_setting, section
from kraken.core.http import make_site
from kraken.core.reactor import IServerReactor
from kraken.core.service import KrakenService
from kraken.core.sqlitedb import DamagedDatabase
from kraken.pipeline.app import PipelineApp, PipelineBoot, PipelineSection
from kraken.pipeline.exposure import warn_about_plain_listeners
from kraken.pipeline.metrics import PipelineCollector
from kraken.pipeline.pipelines import PipelineRegistry
from kraken.pipeline.services import ServiceRegistry


@dataclass(frozen=True, kw_only=True)
class PipelineConfig(ServerConfig):
    listen: list[str] = listen_setting(["tcp:4001:interface=127.0.0.1"])
    pipeline: PipelineSection = section(PipelineSection)


class Options(KrakenOptions[PipelineConfig]):
    tapname = "kraken-pipeline"


def _counter(registry: ServiceRegistry | PipelineRegistry, state: str) -> Callable[[], int]:
    """How many of *registry*'s definitions are in *state*, for a gauge."""
    return lambda: sum(1 for n in registry.names() if registry.status(n) == state)


def makeService(options: Options, reactor: IServerReactor | None = None) -> KrakenService:
    config = options.config
    svc = KrakenService("pipeline", config, reactor)
    try:
        app = PipelineApp(config.pipeline, svc.reactor, svc.tls, svc.metrics)
    except DamagedDatabase as e:
        raise SystemExit(f"kraken-pipeline: {e}") from None
    defined = svc.metrics.gauge("definitions", "defined services and pipelines", ["kind", "state"])
    for kind, registry in (("service", app.services), ("pipeline", app.pipelines)):
        for state in (":ready", ":not_ready"):
            defined.labels(kind, state.lstrip(":")).set_function(_counter(registry, state))
    collector = PipelineCollector(
        svc.metrics.prefix, app.pipelines, app.services.ctx.refusals,
        app.dead_letters, app.journal, app.triggers,
    )
    svc.metrics.registry.register(collector)
    site = make_site(
        app.api.router(), svc.metrics, health_checks={"store": lambda: True}, http=config.http,
        reactor=svc.reactor,
    )
    svc.listen_all("http", config.listen, site, allowed_roles={"client", "pipeline", "agent"})
    warn_about_plain_listeners(config.listen, config.pipeline.api_token)
    PipelineBoot(app, svc.reactor).setServiceParent(svc)
    return svc
