"""The ``mirrors`` setting shared by the agent, the build-index and the origins (sans-IO).

One YAML mapping, the same in every component's config: registry host (as containerd sends it
in ``?ns=``) -> upstream::

    mirrors:
      docker.io:
        url: https://registry-1.docker.io
        tag_ttl: 60                # seconds a resolved tag is trusted before asking again
      registry.example:5000:
        url: https://registry.example:5000
        username: alice            # basic auth, or the credentials for its token service
        password: secret
        ca: /etc/ssl/example-ca.pem
        cert: client.pem           # optional client certificate (mutual TLS)
        key: client.key
        timeout: 60

Images of host ``H`` live in kraken under the repository ``<name>/<upstream repository>``;
``name`` defaults to the host, lower-cased, with ``:`` written as ``-``
(``registry.example:5000`` -> ``registry.example-5000``). For ``docker.io`` a one-component
repository gets Docker Hub's ``library/`` (``alpine`` -> ``library/alpine``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kraken.registry.errors import RegistryError
from kraken.registry.names import check_name

DOCKER_HUB = "docker.io"
DOCKER_HUB_URL = "https://registry-1.docker.io"
DEFAULT_TAG_TTL = 60.0
CONFIG_KEYS = {"url", "name", "username", "password", "ca", "cert", "key", "timeout", "tag_ttl", "library"}
_HOST = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?")


class MirrorConfigError(ValueError):
    """A ``mirrors`` entry that cannot be used; the message names the entry and the key."""


@dataclass(frozen=True)
class Upstream:
    host: str
    name: str
    url: str
    username: str | None = None
    password: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    timeout: float = 60.0
    tag_ttl: float = DEFAULT_TAG_TTL
    library: bool = False

    @property
    def prefix(self) -> str:
        return self.name + "/"

    def backend_config(self) -> dict[str, Any]:
        """The ``registry`` backend (kraken.backends.registry) reading this upstream."""
        config: dict[str, Any] = {"type": "registry", "address": self.url, "prefix": self.prefix,
                                  "timeout": self.timeout}
        for key in ("username", "password", "ca", "cert", "key"):
            value = getattr(self, key)
            if value is not None:
                config[key] = value
        return config


def default_name(host: str) -> str:
    return host.lower().replace(":", "-")


def parse_mirrors(raw: Any, where: str = "mirrors") -> dict[str, Upstream]:
    """Host -> :class:`Upstream` from the config mapping; :class:`MirrorConfigError` if unusable."""
    if raw in (None, {}):
        return {}
    if not isinstance(raw, dict):
        raise MirrorConfigError(f"{where}: expected a mapping of registry host -> {{url: ...}}")
    out: dict[str, Upstream] = {}
    names: dict[str, str] = {}
    for host, entry in raw.items():
        here = f"{where}.{host}"
        if not isinstance(host, str) or not _HOST.fullmatch(host):
            raise MirrorConfigError(f"{here}: not a registry host[:port]")
        if entry is None and host == DOCKER_HUB:
            entry = {}
        if not isinstance(entry, dict):
            raise MirrorConfigError(f"{here}: expected a mapping with url (and optional credentials)")
        unknown = set(entry) - CONFIG_KEYS
        if unknown:
            raise MirrorConfigError(f"{here}: unknown keys {', '.join(sorted(unknown))}; "
                                    f"known: {', '.join(sorted(CONFIG_KEYS))}")
        url = entry.get("url") or (DOCKER_HUB_URL if host == DOCKER_HUB else None)
        if not isinstance(url, str) or not re.match(r"https?://", url):
            raise MirrorConfigError(f"{here}.url: expected http(s)://host[:port] of the upstream registry")
        name = entry.get("name") or default_name(host)
        try:
            check_name(name)
        except RegistryError:
            raise MirrorConfigError(f"{here}.name: {name!r} is not a repository name component") from None
        if "/" in name or name in names:
            raise MirrorConfigError(f"{here}.name: {name!r} must be one component, unique among mirrors")
        names[name] = host
        for key in ("username", "password", "ca", "cert", "key"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise MirrorConfigError(f"{here}.{key}: expected a string")
        try:
            timeout = float(entry.get("timeout", 60.0))
            tag_ttl = float(entry.get("tag_ttl", DEFAULT_TAG_TTL))
        except (TypeError, ValueError):
            raise MirrorConfigError(f"{here}: timeout and tag_ttl are numbers of seconds") from None
        if timeout <= 0 or tag_ttl < 0:
            raise MirrorConfigError(f"{here}: timeout must be > 0 and tag_ttl >= 0")
        out[host] = Upstream(
            host=host, name=name, url=url.rstrip("/"), username=entry.get("username"),
            password=entry.get("password"), ca=entry.get("ca"), cert=entry.get("cert"), key=entry.get("key"),
            timeout=timeout, tag_ttl=tag_ttl, library=bool(entry.get("library", host == DOCKER_HUB)),
        )
    return out


def upstream_of(upstreams: dict[str, Upstream], repo: str) -> Upstream | None:
    """The upstream whose kraken repositories include *repo*."""
    for upstream in upstreams.values():
        if repo.startswith(upstream.prefix) and len(repo) > len(upstream.prefix):
            return upstream
    return None


def mirrored_name(upstreams: dict[str, Upstream], ns: str, repo: str) -> str:
    """The kraken repository of *repo* at registry host *ns*; ``404 NAME_UNKNOWN`` if not mirrored."""
    upstream = upstreams.get(ns) or upstreams.get(ns.lower())
    if upstream is None:
        known = ", ".join(sorted(upstreams)) or "none"
        raise RegistryError(
            "NAME_UNKNOWN",
            f"registry {ns[:200]!r} is not mirrored by this agent: add it to registry.mirrors in the "
            f"agent config (and to the origins' and build-index's mirrors); mirrored: {known[:500]}",
            status=404, detail={"ns": ns[:200]},
        )
    if upstream.library and "/" not in repo:
        repo = f"library/{repo}"
    return f"{upstream.prefix}{repo}"
