"""twistd plugins for the kraken servers: ``twistd -n kraken-<name> --config FILE``.

Each ``ServiceMaker`` names the module holding that server's ``Options`` and ``makeService``
and imports it only when that server starts, so ``twistd --help`` stays fast.
"""

from twisted.application.service import ServiceMaker


def _server(name: str, module: str, description: str) -> ServiceMaker:
    return ServiceMaker(name, module, description, name)


kraken_pubsub = _server(
    "kraken-pubsub", "kraken.pubsub.tap", "Pub/sub over the memcached text protocol, with WebSocket push"
)
kraken_tracker = _server(
    "kraken-tracker", "kraken.tracker.tap", "P2P tracker: peer handout and metainfo from origins"
)
kraken_origin = _server(
    "kraken-origin", "kraken.origin.tap", "P2P origin: blob uploads, backend fetches, seeding"
)
kraken_agent = _server(
    "kraken-agent", "kraken.agent.tap", "P2P agent: downloads blobs from peers and serves them locally"
)
kraken_build_index = _server(
    "kraken-build-index",
    "kraken.buildindex.tap",
    "Tag server: repo:tag to manifest digest, checked against origins",
)
kraken_proxy = _server(
    "kraken-proxy",
    "kraken.proxy.tap",
    "Docker/OCI registry for pushes: blobs to origins, tags to the build-index",
)
kraken_state = _server(
    "kraken-state",
    "kraken.state.tap",
    "Cluster state engine: Cfg/Dsc, mutation graph, IPMI power, parent/child sync",
)
kraken_pipeline = _server(
    "kraken-pipeline",
    "kraken.pipeline.tap",
    "Flow pipelines: JSON services, pipelines and routes over an HTTP JSON API",
)
kraken_dashboard = _server(
    "kraken-dashboard",
    "kraken.dashboard.tap",
    "Dashboard: swarm, nodes, pipelines, topics, registry and health, live in a browser",
)
