"""kraken-dashboard: one web UI for every kraken server, live over a WebSocket."""
