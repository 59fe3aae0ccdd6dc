"""The build-index's tag logic: dependency checks on origins, disk store, backend write-through.

Reads go to the local disk first and fall back to the backend (which may be a read-through
``registry`` backend); a tag read from the backend is kept on disk. Nothing is cached in
memory, so a moved tag resolves to its newest digest on the very next read.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import Logger

from kraken.backends.base import Backend, BlobNotFound
from kraken.buildindex.duplicate import Duplicator
from kraken.core.digest import Digest
from kraken.mirror.tags import MirrorTags
from kraken.p2p.origins import OriginCluster
from kraken.registry.errors import RegistryError
from kraken.registry.manifests import parse_manifest
from kraken.registry.policy import TagRules
from kraken.registry.retention import apply_retention
from kraken.registry.tagstore import TagStore

log = Logger(namespace="kraken.buildindex.tags")


class MissingDependency(Exception):
    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"missing on the origins: {', '.join(missing)}")
        self.missing = missing


class TagListener(Protocol):
    """Told of each tag a client stores (the cross-cluster replicator)."""

    def tag_stored(self, repo: str, tag: str, digest: str, delay: float = 0.0) -> None: ...


class TagService:
    def __init__(
        self,
        store: TagStore,
        scratch: Path,
        origins: OriginCluster | None = None,
        backend: Backend | None = None,
        duplicator: Duplicator | None = None,
        rules: TagRules | None = None,
    ) -> None:
        self.rules = rules or TagRules()
        self.replicator: TagListener | None = None
        self.replica_delay = 10.0  # seconds before a duplicate's replication is first tried
        self.mirror: MirrorTags | None = None  # tags of mirrored repositories come from their upstream
        # told (repo, tag, old digest) after each tag removal: retention and GC bookkeeping
        self.delete_listeners: list[Callable[[str, str, str], object]] = []
        self.store = store
        self.scratch = scratch
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.origins = origins
        self.backend = backend
        self.duplicator = duplicator

    def _tmp(self, suffix: str) -> Path:
        fd, name = tempfile.mkstemp(dir=self.scratch, suffix=suffix)
        os.close(fd)
        return Path(name)

    @inlineCallbacks
    def dependencies(self, repo: str, digest: str) -> Any:
        """Check that the manifest and what it references exist on the origins (namespace *repo*)."""
        if self.origins is None:
            return []
        tmp = self._tmp(".manifest")
        try:
            try:
                yield self.origins.download(repo, Digest.parse(digest), str(tmp))
            except BlobNotFound:
                raise MissingDependency([digest]) from None
            try:
                manifest = parse_manifest(tmp.read_bytes())
            except RegistryError as e:
                raise ValueError(f"{digest} is not a manifest: {e.message}") from None
        finally:
            tmp.unlink(missing_ok=True)
        deps = [*manifest.blobs, *manifest.children]
        missing = []
        for dep in deps:
            size = yield self.origins.stat(repo, Digest.parse(dep))
            if size is None:
                missing.append(dep)
        if missing:
            raise MissingDependency(missing)
        return [digest, *deps]

    @inlineCallbacks
    def put(self, repo: str, tag: str, digest: str, duplicate: bool = False) -> Any:
        """Store a tag; a *duplicate* (a neighbour's copy) skips the checks, is not copied to the
        neighbours again, and is replicated to remote clusters only after ``replica_delay``."""
        if not duplicate:
            if self.rules.immutable:
                current = yield self.get(repo, tag)
                self.rules.check_put(repo, tag, current, digest)
            yield self.dependencies(repo, digest)
        self.store.put(repo, tag, digest)
        if self.duplicator is not None and not duplicate:
            self.duplicator.tag_stored(repo, tag, digest)
        if self.replicator is not None:
            # a neighbour's copy queues the replication too, later: if the build-index that took the
            # tag dies before replicating it, its neighbours' queued copies still do (idempotent)
            self.replicator.tag_stored(repo, tag, digest, self.replica_delay if duplicate else 0.0)
        if self.backend is not None:
            tmp = self._tmp(".tag")
            try:
                tmp.write_text(digest)
                yield self.backend.upload(repo, f"{repo}:{tag}", str(tmp))
            except Exception as e:
                # the tag is stored here; a read-only or failing backend must not lose the push
                log.warn("backend write of {repo}:{tag} failed: {error}", repo=repo, tag=tag, error=str(e))
            finally:
                tmp.unlink(missing_ok=True)

    @inlineCallbacks
    def delete(self, repo: str, tag: str, expected: str | None = None, duplicate: bool = False) -> Any:
        """Remove a tag (only while it points at *expected*, when given); the digest it had, or ``None``.

        The backend's copy goes too, so a later read does not bring the tag back from there;
        neighbours are told unless this is a neighbour's removal (*duplicate*).
        """
        digest = yield self.get(repo, tag)
        if digest is None or (expected is not None and digest != expected):
            return None
        if not duplicate:
            self.rules.check_delete(repo, tag, digest)
        self.store.delete(repo, tag, expected=digest)
        if self.duplicator is not None and not duplicate:
            self.duplicator.tag_deleted(repo, tag)
        if self.backend is not None:
            try:
                yield self.backend.delete(repo, f"{repo}:{tag}")
            except BlobNotFound:
                pass
            except Exception as e:
                log.warn("backend delete of {repo}:{tag} failed: {error}", repo=repo, tag=tag, error=str(e))
        for listener in self.delete_listeners:
            listener(repo, tag, digest)
        return digest

    def apply_retention(self, now: float, dry_run: bool = False) -> Deferred[list[str]]:
        """Remove the tags the retention rules let go (only those on this build-index's disk)."""
        def remove(repo: str, tag: str, digest: str) -> Deferred[Any]:
            removed: Deferred[Any] = self.delete(repo, tag, expected=digest)
            return removed.addCallback(lambda old: old is not None)

        return apply_retention(self.store, self.rules, now, remove, dry_run)

    @inlineCallbacks
    def get(self, repo: str, tag: str) -> Any:
        if self.mirror is not None and self.mirror.owns(repo):
            return (yield self.mirror.get(repo, tag))
        digest = self.store.get(repo, tag)
        if digest is not None or self.backend is None:
            return digest
        tmp = self._tmp(".tag")
        try:
            try:
                yield self.backend.download(repo, f"{repo}:{tag}", str(tmp))
            except BlobNotFound:
                return None
            except Exception as e:
                # a backend outage must not block a push that looks the tag up first
                log.warn("backend lookup of {repo}:{tag} failed: {error}", repo=repo, tag=tag, error=str(e))
                return None
            text = tmp.read_text().strip()
        finally:
            tmp.unlink(missing_ok=True)
        try:
            digest = str(Digest.parse(text))
        except ValueError:
            log.warn("backend holds no digest for {repo}:{tag}: {text!r}", repo=repo, tag=tag,
                     text=text[:100])
            return None
        self.store.put(repo, tag, digest)
        return digest

    @inlineCallbacks
    def list(self, prefix: str) -> Any:
        entries = set(self.store.entries(prefix))
        if self.mirror is not None and ":" in prefix and self.mirror.owns(prefix.partition(":")[0]):
            try:
                remote = yield self.mirror.list_tags(prefix)
                entries.update(e for e in remote if ":" in e)
            except Exception as e:
                log.warn("upstream list of {prefix!r} failed: {error}", prefix=prefix, error=str(e))
            return sorted(entries)
        if self.backend is not None:
            try:
                remote = yield self.backend.list(prefix)
                entries.update(e for e in remote if ":" in e)
            except Exception as e:
                log.warn("backend list of {prefix!r} failed: {error}", prefix=prefix, error=str(e))
        return sorted(entries)
