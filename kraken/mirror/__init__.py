"""Pull-through mirroring of other registries (Docker Hub, GHCR, private ones) through kraken."""
