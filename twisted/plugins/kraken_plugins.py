"""twistd plugins for the kraken servers: ``twistd -n kraken-<name> --config FILE``.

Each ``ServiceMaker`` names the module holding that server's ``Options`` and ``makeService``
and imports it only when that server starts, so ``twistd --help`` stays fast.
"""

from twisted.application.service import ServiceMaker

# One line per built server, in the order of the README's table.
kraken_proxy = ServiceMaker("kraken-proxy", "kraken.proxy.tap", "Docker/OCI registry for pushes: blobs to origins, tags to the build-index", "kraken-proxy")
kraken_pubsub = ServiceMaker("kraken-pubsub", "kraken.pubsub.tap", "Pub/sub over the memcached text protocol, with WebSocket push", "kraken-pubsub")
kraken_tracker = ServiceMaker("kraken-tracker", "kraken.tracker.tap", "P2P tracker: peer handout and metainfo from origins", "kraken-tracker")
kraken_origin = ServiceMaker("kraken-origin", "kraken.origin.tap", "P2P origin: blob uploads, backend fetches, seeding", "kraken-origin")
kraken_agent = ServiceMaker("kraken-agent", "kraken.agent.tap", "P2P agent: downloads blobs from peers and serves them locally", "kraken-agent")
kraken_state = ServiceMaker("kraken-state", "kraken.state.tap", "Cluster state engine", "kraken-state")
kraken_build_index = ServiceMaker("kraken-build-index", "kraken.buildindex.tap", "Tag server: repo:tag to manifest digest, checked against origins", "kraken-build-index")
kraken_pipeline = ServiceMaker("kraken-pipeline", "kraken.pipeline.tap", "Flow pipelines: JSON services, pipelines and routes over an HTTP JSON API", "kraken-pipeline")
