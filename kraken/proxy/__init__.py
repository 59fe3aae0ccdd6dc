"""``kraken-proxy``: the read-write registry users push to; blobs go to origins, tags to the build-index."""
