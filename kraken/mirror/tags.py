"""The build-index side of a pull-through mirror: tags of mirrored repositories.

A tag of ``<mirror name>/<repo>`` is resolved from the upstream registry when it is not here
or was last checked more than the mirror's ``tag_ttl`` seconds ago. A new digest is kept only
once the manifest, every blob it references and (one level into an index) every child
manifest and its blobs are known to be obtainable (through the origins, which fetch from the
same upstream), so no client is sent to an image the upstream cannot deliver in full. While the
upstream fails, the digest kept here is served (stale, and not asked again for ``tag_ttl``),
which is what keeps cached images pullable during an upstream outage.
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from kraken.backends.base import Backend, BlobNotFound
from kraken.core import jsonlimits
from kraken.core.digest import Digest
from kraken.core.http import HTTPError
from kraken.core.httpclient import HTTPStatusError
from kraken.core.metrics import Metrics
from kraken.mirror.config import Upstream, upstream_of
from kraken.registry.errors import RegistryError
from kraken.registry.manifests import parse_manifest
from kraken.registry.tagstore import TagStore

log = Logger(namespace="kraken.mirror.tags")

MAX_CHECKED = 100_000  # tags whose last check time is remembered; older ones are checked again


class BlobSource(Protocol):
    """Where the completeness check reads manifests and asks for blobs (the origin cluster)."""

    def stat(self, namespace: str, digest: Digest) -> Deferred[int | None]: ...
    def download(self, namespace: str, digest: Digest, dest_path: str) -> Deferred[Any]: ...


class BackendSource:
    """:class:`BlobSource` straight from the upstream, for a build-index without origins."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @inlineCallbacks
    def stat(self, namespace: str, digest: Digest) -> Any:
        try:
            size = yield self.backend.stat(namespace, digest.hex)
        except BlobNotFound:
            return None
        return size

    def download(self, namespace: str, digest: Digest, dest_path: str) -> Deferred[Any]:
        return self.backend.download(namespace, str(digest), dest_path)


class UpstreamFailed(HTTPError):
    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(502, "UPSTREAM_FAILED", message, detail=detail)


class UpstreamIncomplete(HTTPError):
    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(502, "UPSTREAM_INCOMPLETE", message, detail={"missing": missing})


def mirror_error(error: BaseException) -> tuple[str, Any] | None:
    """``(message, detail)`` of an :class:`UpstreamFailed`/:class:`UpstreamIncomplete` answer the
    build-index sent (an :class:`HTTPStatusError` of the tag client), else ``None``."""
    if not isinstance(error, HTTPStatusError) or error.status != 502:
        return None
    try:
        body = jsonlimits.loads(error.body, strict=True)["error"]
        code, message, detail = body["code"], body["message"], body.get("detail")
    except (ValueError, KeyError, TypeError):
        return None
    if code not in ("UPSTREAM_FAILED", "UPSTREAM_INCOMPLETE") or not isinstance(message, str):
        return None
    return message[:1000], detail


class MirrorTags:
    def __init__(
        self,
        upstreams: dict[str, Upstream],
        backends: dict[str, Backend],
        store: TagStore,
        scratch: Path,
        clock: IReactorTime,
        source: BlobSource | None = None,
        max_checked: int = MAX_CHECKED,
        metrics: Metrics | None = None,
    ) -> None:
        self.m_lookups = (metrics.counter("mirror_tag_lookups", "tags of mirrored repositories looked up",
                                          ["outcome"]) if metrics is not None else None)
        self.upstreams = upstreams
        self.backends = backends  # mirror name -> registry backend of that upstream
        self.store = store
        self.scratch = scratch
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.source = source
        self.max_checked = max_checked
        self.checked: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._inflight: dict[tuple[str, str], list[Deferred[Any]]] = {}

    def owns(self, repo: str) -> bool:
        return upstream_of(self.upstreams, repo) is not None

    def get(self, repo: str, tag: str) -> Deferred[Any]:
        """The digest of mirrored *repo*:*tag*, or ``None`` when the upstream has no such tag."""
        upstream = upstream_of(self.upstreams, repo)
        assert upstream is not None
        stored = self.store.get(repo, tag)
        key = (repo, tag)
        checked = self.checked.get(key)
        d: Deferred[Any] = Deferred()
        if stored is not None and checked is not None and self.clock.seconds() - checked < upstream.tag_ttl:
            self._count("fresh")
            d.callback(stored)
            return d
        if key in self._inflight:
            self._inflight[key].append(d)
            return d
        self._inflight[key] = [d]
        self._refresh(upstream, repo, tag, stored).addBoth(self._answer, key)
        return d

    def list_tags(self, prefix: str) -> Deferred[Any]:
        """``repo:tag`` names of a mirrored repository (*prefix* ``repo:`` or ``repo:v``) at its upstream."""
        upstream = upstream_of(self.upstreams, prefix.partition(":")[0])
        assert upstream is not None
        return self.backends[upstream.name].list(prefix)

    def _count(self, outcome: str) -> None:
        if self.m_lookups is not None:
            self.m_lookups.labels(outcome).inc()

    def _answer(self, result: Any, key: tuple[str, str]) -> None:
        for d in self._inflight.pop(key, []):
            d.errback(result) if isinstance(result, Failure) else d.callback(result)

    def _remember(self, key: tuple[str, str]) -> None:
        self.checked[key] = self.clock.seconds()
        self.checked.move_to_end(key)
        while len(self.checked) > self.max_checked:
            self.checked.popitem(last=False)

    def _tmp(self, suffix: str) -> Path:
        fd, name = tempfile.mkstemp(dir=self.scratch, suffix=suffix)
        os.close(fd)
        return Path(name)

    @inlineCallbacks
    def _refresh(self, upstream: Upstream, repo: str, tag: str, stored: str | None) -> Any:
        backend = self.backends[upstream.name]
        tmp = self._tmp(".tag")
        try:
            yield backend.download(repo, f"{repo}:{tag}", str(tmp))
            digest = str(Digest.parse(tmp.read_text().strip()))
        except BlobNotFound:
            self.checked.pop((repo, tag), None)
            self._count("unknown")
            return None
        except Exception as e:
            if stored is not None:
                self._count("stale")
                self._remember((repo, tag))  # not asked again for tag_ttl: a hanging upstream stalls once
                log.warn("upstream {url} failed for {repo}:{tag}, serving the kept {digest}: {error}",
                         url=upstream.url, repo=repo, tag=tag, digest=stored, error=str(e))
                return stored
            self._count("failed")
            raise UpstreamFailed(f"mirror {upstream.host} ({upstream.url}) failed for {repo}:{tag}: "
                                 f"{str(e)[:400]}") from None
        finally:
            tmp.unlink(missing_ok=True)
        if digest != stored:
            try:
                yield self.check_complete(upstream, repo, digest)
            except UpstreamIncomplete:
                self._count("incomplete")
                raise
            except Exception as e:
                if stored is not None:
                    self._count("stale")
                    log.warn("checking {repo}@{digest} failed, serving the kept {kept}: {error}",
                             repo=repo, digest=digest, kept=stored, error=str(e))
                    return stored
                self._count("failed")
                raise UpstreamFailed(f"mirror {upstream.host} ({upstream.url}): checking {repo}@{digest} "
                                     f"failed: {str(e)[:400]}") from None
            self.store.put(repo, tag, digest)
            log.info("mirror tag {repo}:{tag} -> {digest}", repo=repo, tag=tag, digest=digest)
        self._remember((repo, tag))
        self._count("upstream")
        return digest

    @inlineCallbacks
    def check_complete(self, upstream: Upstream, repo: str, digest: str) -> Any:
        """Fail with :class:`UpstreamIncomplete` unless the image can be delivered in full."""
        source = self.source or BackendSource(self.backends[upstream.name])
        missing: list[str] = []
        manifest = yield self._manifest(source, repo, digest, missing)
        if manifest is not None:
            for blob in manifest.blobs:
                size = yield source.stat(repo, Digest.parse(blob))
                if size is None:
                    missing.append(blob)
            for child in manifest.children:
                sub = yield self._manifest(source, repo, child, missing)
                for blob in sub.blobs if sub is not None else ():
                    size = yield source.stat(repo, Digest.parse(blob))
                    if size is None:
                        missing.append(blob)
        if missing:
            raise UpstreamIncomplete(
                f"mirror {upstream.host} ({upstream.url}) lacks {len(missing)} blob(s) of {repo}@{digest}; "
                "not serving a partial image", missing[:100])

    @inlineCallbacks
    def _manifest(self, source: BlobSource, repo: str, digest: str, missing: list[str]) -> Any:
        tmp = self._tmp(".manifest")
        try:
            try:
                yield source.download(repo, Digest.parse(digest), str(tmp))
            except BlobNotFound:
                missing.append(digest)
                return None
            try:
                return parse_manifest(tmp.read_bytes())
            except RegistryError as e:
                raise UpstreamFailed(f"{repo}@{digest} from the upstream is not a manifest: {e.message}") \
                    from None
        finally:
            tmp.unlink(missing_ok=True)
