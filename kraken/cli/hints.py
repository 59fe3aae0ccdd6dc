"""What the ``kraken`` command says when a server is not there: which server the dev cluster runs
on that port, and the command that starts it."""

from __future__ import annotations

import errno
import os

START_CLUSTER = "bash scripts/cluster.sh"
MAKE_CERTS = "kraken certs dev run/pki"

# The loopback ports of the example configs in etc/ (what `kraken cluster up` starts).
DEV_PORTS: dict[int, tuple[str, str]] = {
    12355: ("kraken-pubsub", "memcached protocol"),
    12356: ("kraken-pubsub", "admin API"),
    12357: ("kraken-pubsub", "WebSocket push"),
    12358: ("kraken-pubsub", "memcached protocol over mutual TLS"),
    15000: ("kraken-proxy", "registry API"),
    15001: ("kraken-tracker", "announce API"),
    15002: ("kraken-origin", "blob API"),
    15004: ("kraken-build-index", "tag API"),
    16000: ("kraken-agent", "blob API"),
    5055: ("kraken-agent", "registry port"),
    3141: ("kraken-state", "REST API"),
    4001: ("kraken-pipeline", "HTTP API"),
    4443: ("kraken-pipeline", "HTTP API over mutual TLS"),
}


def _port_of(address: str) -> int | None:
    tail = address.rstrip("/").rsplit(":", 1)[-1].split("/", 1)[0]
    return int(tail) if tail.isdigit() else None


def unreachable(address: str, reason: object) -> str:
    """One line for a failed connection to *address* (``host:port`` or a URL)."""
    text = f"cannot reach {address}: {str(reason).rstrip('.')}"
    port = _port_of(address)
    if port in DEV_PORTS:
        server, what = DEV_PORTS[port]
        short = server.removeprefix("kraken-")
        text += (
            f"; in the dev cluster {server} serves its {what} there: start it with `{START_CLUSTER}`"
            f" (or `twistd -n {server} --config etc/{short}.yaml`)"
        )
    else:
        text += f"; is the server running? `{START_CLUSTER}` starts the dev cluster"
    return text


def is_refused(error: BaseException) -> bool:
    return isinstance(error, ConnectionRefusedError) or getattr(error, "errno", None) == errno.ECONNREFUSED


def missing_certificate(path: str) -> str | None:
    """A hint when the certificate file *path* does not exist, else ``None``."""
    if os.path.exists(path):
        return None
    folder = os.path.dirname(path) or "."
    return f"no certificate at {path}: create the dev CA and certificates with `kraken certs dev {folder}`"
