"""containerd ``hosts.toml`` files sending pulls of upstream registries to the local agent (sans-IO).

containerd (``config_path`` of its CRI registry config, or ``ctr --hosts-dir``) reads
``<dir>/<registry host>/hosts.toml``; the ``host`` entry is tried first, ``server`` is the
fallback when the mirror cannot answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kraken.mirror.config import DOCKER_HUB, DOCKER_HUB_URL

_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?")


@dataclass(frozen=True)
class HostsFile:
    host: str
    text: str

    @property
    def relative_path(self) -> str:
        return f"{self.host}/hosts.toml"


def parse_upstream(spec: str) -> tuple[str, str]:
    """``HOST`` or ``HOST=URL`` -> (host, server URL); ValueError with a message otherwise."""
    host, sep, url = spec.partition("=")
    if not _HOST.fullmatch(host):
        raise ValueError(f"{spec!r}: expected a registry HOST[:PORT], optionally =URL of its server")
    if not sep:
        url = DOCKER_HUB_URL if host == DOCKER_HUB else f"https://{host}"
    if not re.fullmatch(r"https?://[^\s\"]+", url):
        raise ValueError(f"{spec!r}: the server must be an http:// or https:// URL")
    return host, url.rstrip("/")


def hosts_toml(host: str, server: str, agent: str) -> HostsFile:
    """The ``hosts.toml`` of registry *host*: pull and resolve through *agent* (a URL)."""
    text = (f"# pulls of {host} go through the local kraken agent; {server} when it cannot answer\n"
            f'server = "{server}"\n\n[host."{agent}"]\n  capabilities = ["pull", "resolve"]\n')
    return HostsFile(host, text)
