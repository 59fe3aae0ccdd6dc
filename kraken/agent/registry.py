"""The agent's registry port: a read-only registry whose blobs arrive through P2P.

Tags resolve through the build-index on every request (no cache: a moved tag is seen at
once); manifests and blobs come from ``blobs.fetch(namespace, digest)``, which downloads
them from peers (namespace = repository) and returns the verified local file. Pushes are
answered ``405 UNSUPPORTED`` with a pointer to the proxy, and so are deletes (``DELETE`` of
manifests, tags and blobs): the agent only caches what the cluster holds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger
from twisted.web.server import Request, Site

from kraken.backends.base import BlobNotFound
from kraken.core.config import HTTPSection
from kraken.core.digest import Digest
from kraken.core.metrics import Metrics
from kraken.core.reactor import IServerReactor
from kraken.core.tls import TLSSettings
from kraken.mirror.tags import mirror_error
from kraken.registry.api import RegistryResource
from kraken.registry.auth import Authenticator
from kraken.registry.coalesce import FreshCoalescer
from kraken.registry.errors import RegistryError, blob_unknown
from kraken.registry.referrerclient import ReferrerClient
from kraken.registry.site import make_registry_site
from kraken.registry.tagclient import TagClient

log = Logger(namespace="kraken.registry.agent")

PUSH_HINT = (
    "this kraken agent serves pulls only; push images to the kraken proxy "
    "(twistd kraken-proxy), and pull them here"
)


class BlobSource(Protocol):
    def fetch(self, namespace: str, digest: str) -> Deferred[str]: ...


def _unavailable(f: Any, what: str) -> Any:
    if f.check(RegistryError):
        return f
    log.warn("{what} failed: {error}", what=what, error=f.getErrorMessage())
    upstream = mirror_error(f.value)
    if upstream is not None:  # a mirrored upstream failed: pass the build-index's explanation on
        raise RegistryError("UNAVAILABLE", upstream[0], status=503, detail=upstream[1])
    raise RegistryError("UNAVAILABLE", f"{what} failed: {f.getErrorMessage()[:300]}", status=503)


class AgentStorage:
    read_only = True

    def __init__(self, blobs: BlobSource, tags: TagClient | None) -> None:
        self.blobs = blobs
        self.tags = tags
        self.lookups = FreshCoalescer(tags.get) if tags is not None else None

    @inlineCallbacks
    def blob_path(self, name: str, digest: Digest) -> Any:
        try:
            path = yield self.blobs.fetch(name, str(digest))
        except BlobNotFound:
            raise blob_unknown(str(digest)) from None
        except RegistryError:
            raise
        except Exception as e:
            log.warn("P2P download of {digest} ({name}) failed: {error}", digest=str(digest), name=name,
                     error=str(e))
            raise RegistryError("UNAVAILABLE", f"P2P download failed: {str(e)[:300]}", status=503) from None
        return str(path)

    @inlineCallbacks
    def blob_size(self, name: str, digest: Digest) -> Any:
        # as in the original, the size is only known once the blob is here
        try:
            path = yield self.blob_path(name, digest)
        except RegistryError as e:
            if e.code == "BLOB_UNKNOWN":
                return None
            raise
        return os.path.getsize(path)

    def _need_tags(self) -> TagClient:
        if self.tags is None:
            message = "no build-index is configured (registry.build_index)"
            raise RegistryError("UNSUPPORTED", message, status=404)
        return self.tags

    def resolve_tag(self, name: str, tag: str) -> Deferred[str | None]:
        self._need_tags()
        assert self.lookups is not None
        return self.lookups.get(name, tag).addErrback(_unavailable, "build-index lookup")

    @inlineCallbacks
    def list_tags(self, name: str) -> Any:
        entries = yield self._need_tags().list(f"{name}:").addErrback(_unavailable, "build-index list")
        return [e[len(name) + 1 :] for e in entries] or None

    @inlineCallbacks
    def list_repositories(self) -> Any:
        entries = yield self._need_tags().list("").addErrback(_unavailable, "build-index list")
        return sorted({e.rpartition(":")[0] for e in entries})

    def commit_blob(self, name: str, digest: Digest, path: Path) -> Deferred[Any]:
        raise RegistryError("UNSUPPORTED", PUSH_HINT)

    def mount_blob(self, source: str | None, name: str, digest: Digest) -> Deferred[bool]:
        raise RegistryError("UNSUPPORTED", PUSH_HINT)

    def put_tag(self, name: str, tag: str, digest: Digest) -> Deferred[Any]:
        raise RegistryError("UNSUPPORTED", PUSH_HINT)

    def delete_blob(self, name: str, digest: Digest) -> Deferred[bool]:
        raise RegistryError("UNSUPPORTED", PUSH_HINT)

    def delete_manifest(self, name: str, digest: Digest) -> Deferred[bool]:
        raise RegistryError("UNSUPPORTED", PUSH_HINT)

    def delete_tag(self, name: str, tag: str) -> Deferred[bool]:
        raise RegistryError("UNSUPPORTED", PUSH_HINT)


def make_agent_registry(
    blobs: BlobSource,
    build_index: str | None,
    allow_cidrs: list[str],
    tls: TLSSettings | None,
    metrics: Metrics,
    reactor: IServerReactor,
    http: HTTPSection | None = None,
    name_for: Callable[[Request, str], str] | None = None,
    auth: Authenticator | None = None,
) -> Site:
    """The site the agent listens with on ``registry.listen``; tags come from *build_index*."""
    tags = TagClient(reactor, build_index, tls) if build_index else None
    referrers = ReferrerClient(reactor, build_index, tls, tags.http) if build_index and tags else None
    api = RegistryResource(
        AgentStorage(blobs, tags), None, metrics, read_only_hint=PUSH_HINT,
        allow_cidrs=allow_cidrs or None, reactor=reactor, referrers=referrers, name_for=name_for, auth=auth,
    )
    return make_registry_site(api, metrics, http=http, reactor=reactor)
