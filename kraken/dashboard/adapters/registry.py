"""Registry page: repositories and tags from the build-index, each tag's digest, and its size
from the manifest the proxy serves (config + layers; for an index, the sum of its images)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks

from kraken.dashboard.adapters import each
from kraken.dashboard.sources import Fetcher, FetchError, Server

MAX_TAGS = 200
ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


def _image_size(manifest: dict[str, Any]) -> int:
    parts = [manifest.get("config", {}), *manifest.get("layers", [])]
    return sum(int(p.get("size", 0)) for p in parts if isinstance(p, dict))


class RegistryAdapter:
    def __init__(self, fetcher: Fetcher, indexes: list[Server], proxies: list[Server]) -> None:
        self.fetcher = fetcher
        self.indexes = indexes
        self.proxies = proxies

    @inlineCallbacks
    def _size(self, repo: str, ref: str) -> Any:
        """(bytes, platforms) of *repo*:*ref* from the first proxy, ``(None, None)`` without one."""
        if not self.proxies:
            return None, None
        proxy = self.proxies[0]
        path = f"/v2/{quote(repo, safe='/')}/manifests/{quote(ref, safe=':')}"
        manifest = yield self.fetcher.get_json(proxy, path, accept=ACCEPT)
        if "manifests" in manifest:
            sizes = yield gatherResults(
                [self._size(repo, m["digest"]) for m in manifest["manifests"][:16] if "digest" in m]
            )
            return sum(s for s, _ in sizes if s), len(manifest["manifests"])
        return _image_size(manifest), 1

    @inlineCallbacks
    def _tag(self, server: Server, entry: str) -> Any:
        repo, _, tag = entry.rpartition(":")
        digest = yield self.fetcher.get_text(server, f"/tags/{quote(entry, safe='')}", 1024)
        try:
            size, platforms = yield self._size(repo, tag)
            error = None
        except FetchError as e:
            size, platforms, error = None, None, str(e)[:200]
        return {"repo": repo, "tag": tag, "digest": digest.strip(), "size": size, "platforms": platforms,
                "error": error}

    @inlineCallbacks
    def _read(self, server: Server) -> Any:
        listing = yield self.fetcher.get_json(server, f"/list/?limit={MAX_TAGS}")
        entries = [e for e in listing.get("result", []) if isinstance(e, str) and ":" in e]
        tags = yield gatherResults([self._tag(server, e) for e in entries[:MAX_TAGS]])
        repos: dict[str, dict[str, Any]] = {}
        for t in tags:
            repo = repos.setdefault(t["repo"], {"name": t["repo"], "tags": [], "size": 0})
            repo["tags"].append(t)
            repo["size"] += t["size"] or 0
        return {"repositories": sorted(repos.values(), key=lambda r: r["name"]),
                "more": listing.get("next_offset") is not None}

    def collect(self) -> Deferred[dict[str, Any]]:
        return each(self.indexes, self._read).addCallback(lambda rows: {"servers": rows})
