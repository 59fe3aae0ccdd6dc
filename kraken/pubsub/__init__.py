"""kraken-pubsub: topic pub/sub over the memcached text protocol, with WebSocket push."""
