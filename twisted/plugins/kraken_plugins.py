"""twistd plugins for the kraken servers: ``twistd -n kraken-<name> --config FILE``.

Each ``ServiceMaker`` names the module holding that server's ``Options`` and ``makeService``
and imports it only when the server is started, so ``twistd --help`` stays fast. A server
appears here once its ``tap`` module exists.
"""

from importlib.util import find_spec

from twisted.application.service import ServiceMaker

_SERVERS = [
    ("kraken-pubsub", "kraken.pubsub.tap", "Pub/sub over the memcached text protocol, with WebSocket push"),
    ("kraken-tracker", "kraken.tracker.tap", "P2P tracker: peer discovery and metainfo for blobs"),
    ("kraken-origin", "kraken.origin.tap", "P2P origin: blob storage, backends and seeding"),
    ("kraken-agent", "kraken.agent.tap", "P2P agent: downloads blobs from peers, serves a registry API"),
    ("kraken-build-index", "kraken.buildindex.tap", "Tag to digest index for images, with replication"),
    ("kraken-proxy", "kraken.proxy.tap", "Registry push endpoint: blobs to origins, tags to build-index"),
    ("kraken-state", "kraken.state.tap", "Cluster state engine: intended vs discovered node state"),
    ("kraken-pipeline", "kraken.pipeline.tap", "Flow pipelines: JSON DSL services and pipelines over HTTP"),
]


def _built(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:
        return False


for _tapname, _module, _description in _SERVERS:
    if _built(_module):
        globals()[_tapname.replace("-", "_")] = ServiceMaker(_tapname, _module, _description, _tapname)
