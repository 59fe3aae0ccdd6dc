"""kraken-state: a cluster state engine (intended vs discovered state, driven along a mutation graph)."""
