"""Configs and helpers for the P2P integration tests (tracker, origin, agents as twistd processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from kraken.core import certs
from kraken.core.httpclient import make_http_client
from tests.support import tls_section, tls_settings

FAST_SCHEDULER = {"tick_interval": 0.2, "announce_interval": 0.5, "handshake_timeout": 3.0}


def origin_config(pki: Path, root: Path, backend: Path | None = None, **origin: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "store": str(root / "store"),
        "peer_listen": ["tls:tcp:0:interface=127.0.0.1"],
        "piece_lengths": {0: 1024 * 1024},
        **origin,
    }
    if backend is not None:
        section["backends"] = [{"namespace": ".*", "backend": {"type": "fs", "root": str(backend)}}]
    return {
        "listen": ["tls:tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "origin", require_client_cert=False),
        "origin": section,
        "scheduler": FAST_SCHEDULER,
    }


def tracker_config(pki: Path, origin_port: int) -> dict[str, Any]:
    return {
        "listen": ["tls:tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "tracker"),
        "tracker": {"origins": [f"127.0.0.1:{origin_port}"], "announce_interval": 0.5},
    }


def agent_config(pki: Path, root: Path, tracker_port: int, **extra: Any) -> dict[str, Any]:
    return {
        "listen": ["tcp:0:interface=127.0.0.1"],
        "tls": tls_section(pki, "agent"),
        "agent": {
            "store": str(root / "store"),
            "peer_listen": ["tls:tcp:0:interface=127.0.0.1"],
            "tracker": f"127.0.0.1:{tracker_port}",
        },
        "registry": {"listen": []},
        "scheduler": {**FAST_SCHEDULER, **extra.pop("scheduler", {})},
        **extra,
    }


def client(pki: Path, role: str = "client") -> HTTPClient:
    """An HTTPS client of any kraken server (it accepts every server role)."""
    return make_http_client(reactor, tls_settings(pki, role), certs.ROLES, persistent=False)


@implementer(IPolicyForHTTPS)
class _TrustOnly:
    def __init__(self, ca: Path) -> None:
        self.trust = ssl.Certificate.loadPEM(ca.read_bytes())

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return ssl.optionsForClientTLS(hostname.decode(), trustRoot=self.trust)


def anonymous_client(pki: Path) -> HTTPClient:
    """HTTPS that trusts our CA but presents no certificate."""
    return HTTPClient(Agent(reactor, _TrustOnly(pki / "ca.pem"), pool=HTTPConnectionPool(reactor, False)))


def sleep(seconds: float) -> Any:
    return deferLater(reactor, seconds, lambda: None)


@inlineCallbacks
def metric(http: HTTPClient, url: str, name: str) -> Any:
    """Sum of every sample of *name* on a /metrics page."""
    response = yield http.get(url)
    text = yield response.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head = line.split(" ")[0]
            if head == name or head.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
    return total
