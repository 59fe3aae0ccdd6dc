"""``kraken-build-index``: repository tags (``repo:tag`` → manifest digest) for the proxy and agents."""
