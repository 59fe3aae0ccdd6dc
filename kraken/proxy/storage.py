"""The proxy's registry storage: a local blob cache, the origin cluster, and a tag source.

Blobs committed by an upload are verified by the registry API, kept in the local cache and
pushed to the origins owning them under the real repository namespace before the client gets
its 201. Reads come from the cache or are fetched from the origins (and verified).

A cached copy is checked (:class:`~kraken.core.verify.BlobVerifier`) before ``HEAD``,
``GET`` or a mount uses it; one that no longer matches its digest is quarantined and, with
origins, fetched again from them; without origins the blob is then unknown (404).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail, inlineCallbacks, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from kraken.backends.base import BlobNotFound
from kraken.core import jsonlimits
from kraken.core.cas import CAStore
from kraken.core.digest import ALGO, Digest
from kraken.core.httpclient import HTTPStatusError
from kraken.core.verify import BlobVerifier
from kraken.p2p.origins import OriginCluster
from kraken.registry.coalesce import FreshCoalescer
from kraken.registry.errors import RegistryError, blob_unknown
from kraken.registry.policy import TagImmutable, TagRules
from kraken.registry.retention import apply_retention
from kraken.registry.tagclient import TagClient
from kraken.registry.tagstore import TagStore

log = Logger(namespace="kraken.proxy.storage")


class Tags(Protocol):
    def get(self, repo: str, tag: str) -> Deferred[str | None]: ...
    def put(self, repo: str, tag: str, digest: str) -> Deferred[Any]: ...
    def tags(self, repo: str) -> Deferred[list[str] | None]: ...
    def repositories(self) -> Deferred[list[str]]: ...
    def delete(self, repo: str, tag: str, expected: str | None = None) -> Deferred[bool]: ...


class LocalTags:
    """Tags in a directory of this proxy (no build-index configured), under the proxy's tag rules."""

    def __init__(self, store: TagStore, rules: TagRules | None = None) -> None:
        self.store = store
        self.rules = rules or TagRules()

    def get(self, repo: str, tag: str) -> Deferred[str | None]:
        return succeed(self.store.get(repo, tag))

    def put(self, repo: str, tag: str, digest: str) -> Deferred[Any]:
        try:
            self.rules.check_put(repo, tag, self.store.get(repo, tag), digest)
        except TagImmutable as e:
            return fail(immutable_error(str(e)))
        self.store.put(repo, tag, digest)
        return succeed(None)

    def tags(self, repo: str) -> Deferred[list[str] | None]:
        return succeed(self.store.tags(repo))

    def repositories(self) -> Deferred[list[str]]:
        return succeed(self.store.repositories())

    def delete(self, repo: str, tag: str, expected: str | None = None) -> Deferred[bool]:
        current = self.store.get(repo, tag)
        if current is not None:
            try:
                self.rules.check_delete(repo, tag, current)
            except TagImmutable as e:
                return fail(immutable_error(str(e)))
        return succeed(self.store.delete(repo, tag, expected) is not None)

    def apply_retention(self, now: float, dry_run: bool = False) -> Deferred[list[str]]:
        return apply_retention(self.store, self.rules, now, self.delete, dry_run)


class BuildIndexTags:
    """Tags kept by the build-index cluster."""

    def __init__(self, client: TagClient) -> None:
        self.client = client
        self.lookups = FreshCoalescer(client.get)

    def get(self, repo: str, tag: str) -> Deferred[str | None]:
        return _unavailable(self.lookups.get(repo, tag), "build-index")

    def put(self, repo: str, tag: str, digest: str) -> Deferred[Any]:
        def refused(f: Any) -> Any:
            if f.check(HTTPStatusError) and f.value.status == 424:
                detail = _error_detail(f.value.body)
                message = "the build-index found blobs missing on the origins"
                raise RegistryError("MANIFEST_BLOB_UNKNOWN", message, detail=detail)
            return _immutable(f)

        return _unavailable(self.client.put(repo, tag, digest).addErrback(refused), "build-index")

    @inlineCallbacks
    def tags(self, repo: str) -> Any:
        entries = yield _unavailable(self.client.list(f"{repo}:"), "build-index")
        return [e[len(repo) + 1:] for e in entries] or None

    @inlineCallbacks
    def repositories(self) -> Any:
        entries = yield _unavailable(self.client.list(""), "build-index")
        return sorted({e.rpartition(":")[0] for e in entries})

    def delete(self, repo: str, tag: str, expected: str | None = None) -> Deferred[bool]:
        return _unavailable(self.client.delete(repo, tag, expected).addErrback(_immutable), "build-index")


def immutable_error(message: str) -> RegistryError:
    return RegistryError("DENIED", message)


def _immutable(f: Any) -> Any:
    """The build-index's ``403 TAG_IMMUTABLE`` is the registry's ``403 DENIED``."""
    if f.check(HTTPStatusError) and f.value.status == 403 and _error_code(f.value.body) == "TAG_IMMUTABLE":
        raise immutable_error(_error_message(f.value.body) or "the tag is immutable")
    return f


def _error_field(body: bytes, name: str) -> Any:
    try:
        return jsonlimits.loads(body, strict=True)["error"].get(name)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _error_code(body: bytes) -> Any:
    return _error_field(body, "code")


def _error_message(body: bytes) -> Any:
    return _error_field(body, "message")


def _missing(error: RegistryError) -> list[Digest]:
    detail = error.detail.get("missing") if isinstance(error.detail, dict) else None
    out = []
    for text in detail if isinstance(detail, list) else []:
        try:
            out.append(Digest.parse(text))
        except (TypeError, ValueError):
            return []
    return out


def _error_detail(body: bytes) -> Any:
    return _error_field(body, "detail")


def _unavailable(d: Deferred[Any], what: str) -> Deferred[Any]:
    def fail(f: Any) -> None:
        if f.check(RegistryError):
            return f
        log.warn("{what} request failed: {error}", what=what, error=f.getErrorMessage())
        raise RegistryError("UNAVAILABLE", f"the {what} failed: {f.getErrorMessage()[:300]}", status=503)

    return d.addErrback(fail)


def adopt_flat_cache(cache: CAStore) -> int:
    """Move blobs an older proxy kept as ``<root>/sha256/<2 hex>/<hex>`` into the store.

    Without origins the cache is the proxy's only copy, so they must stay readable. They
    were verified when stored; a move is a rename. Returns how many blobs moved.
    """
    moved = 0
    for path in sorted(cache.root.glob("sha256/??/*")):
        try:
            digest = Digest(ALGO, path.name)
        except ValueError:  # a temporary file the older proxy left behind
            continue
        cache.ingest(path, digest, verify=False)
        moved += 1
    for directory in [*cache.root.glob("sha256/??"), cache.root / "sha256"]:
        try:
            directory.rmdir()
        except OSError:  # not empty (stray files stay), or absent
            pass
    if moved:
        log.info("moved {count} blobs of the older cache layout into the store", count=moved)
    return moved


class ProxyStorage:
    read_only = False

    def __init__(
        self, cache: CAStore, tags: Tags, origins: OriginCluster | None, verifier: BlobVerifier
    ) -> None:
        adopt_flat_cache(cache)
        self.cache = cache
        self.tags = tags
        self.origins = origins
        self.verifier = verifier
        self._fetching: dict[Digest, list[Deferred[str]]] = {}

    @inlineCallbacks
    def blob_size(self, name: str, digest: Digest) -> Any:
        cached = yield self.verifier.check(digest)  # as GET would decide
        size = self.cache.size(digest) if cached else None
        if size is not None or self.origins is None:
            return size
        try:
            size = yield self.origins.stat(name, digest)
        except Exception as e:
            # a push must go on while an origin is down: report "unknown", the upload follows
            log.warn("origin stat of {digest} failed: {error}", digest=str(digest), error=str(e))
            return None
        return size

    @inlineCallbacks
    def blob_path(self, name: str, digest: Digest) -> Any:
        cached = yield self.verifier.check(digest)
        if cached:
            if self.origins is not None:
                self.cache.touch(digest)
            return str(self.cache.blob_path(digest))
        if self.origins is None:
            raise blob_unknown(str(digest))
        waiting: Deferred[str] = Deferred()
        if digest in self._fetching:
            self._fetching[digest].append(waiting)
        else:
            self._fetching[digest] = [waiting]
            self._fetch(name, digest).addBoth(self._fetched, digest)
        path = yield waiting
        return path

    def _fetched(self, result: Any, digest: Digest) -> None:
        for d in self._fetching.pop(digest, []):
            d.callback(result) if isinstance(result, str) else d.errback(result)

    @inlineCallbacks
    def _fetch(self, name: str, d: Digest) -> Any:
        """Download *d* from the first owning origin that sends the right bytes."""
        assert self.origins is not None
        tmp = self.cache.temp_path()
        try:
            try:
                owners = yield self.origins.owners(d)
            except Exception as e:
                message = f"origin lookup failed: {str(e)[:300]}"
                raise RegistryError("UNAVAILABLE", message, status=503) from None
            problems = []
            for origin in owners:
                try:
                    yield origin.download(name, d, str(tmp))
                except BlobNotFound:
                    problems.append(f"{origin.base}: not found")
                    continue
                except Exception as e:
                    self.origins.failed(origin, e)  # tried last for a while
                    problems.append(f"{origin.base}: {str(e)[:200]}")
                    continue
                actual = yield deferToThread(Digest.of_file, tmp, d.algo)
                if actual == d:
                    return str(self.cache.ingest(tmp, d, verify=False, checked=True, durable=False))
                log.error("origin {origin} sent {actual} for {digest}", origin=origin.base,
                          actual=str(actual), digest=str(d))
                problems.append(f"{origin.base}: sent {actual}")
            if problems and all(p.endswith(": not found") for p in problems):
                raise blob_unknown(str(d))
            message = f"origin download failed: {'; '.join(problems)[:300]}"
            raise RegistryError("UNAVAILABLE", message, status=503)
        finally:
            tmp.unlink(missing_ok=True)

    @inlineCallbacks
    def commit_blob(self, name: str, digest: Digest, path: Path) -> Any:
        # in a worker thread: the commit syncs the blob to disk (tens of ms), the reactor goes on
        stored = yield deferToThread(self.cache.ingest, path, digest, False, True)
        yield self._push(name, digest, stored)

    @inlineCallbacks
    def _push(self, name: str, d: Digest, path: Path) -> Any:
        if self.origins is None:
            return
        try:
            yield self.origins.upload(name, d, str(path))
        except Exception as e:
            log.error("upload of {digest} ({name}) to origins failed: {error}", digest=str(d), name=name,
                      error=str(e))
            raise RegistryError("UNAVAILABLE", f"storing the blob on the origins failed: {str(e)[:300]}",
                                status=503) from None

    @inlineCallbacks
    def mount_blob(self, source: str | None, name: str, digest: Digest) -> Any:
        path = self.cache.blob_path(digest)
        cached = yield self.verifier.check(digest)
        if cached:
            # the origins write back per namespace: give the new repository its own copy there
            yield self._push(name, digest, path)
            return True
        size = yield self.blob_size(source or name, digest)
        if size is None:
            return False
        yield self.blob_path(source or name, digest)
        yield self._push(name, digest, path)
        return True

    def resolve_tag(self, name: str, tag: str) -> Deferred[str | None]:
        return self.tags.get(name, tag)

    @inlineCallbacks
    def put_tag(self, name: str, tag: str, digest: Digest) -> Any:
        try:
            yield self.tags.put(name, tag, str(digest))
            return
        except RegistryError as e:
            missing = _missing(e) if e.code == "MANIFEST_BLOB_UNKNOWN" and self.origins is not None else []
            restorable = [d for d in missing if self.cache.has(d)]
            if not missing or len(restorable) != len(missing):
                raise
        # the origins lost blobs this cache still holds (garbage-collected between the client's
        # HEAD and its manifest): give them back, then ask once more
        log.info("restoring {n} blobs of {name}:{tag} the origins no longer hold", n=len(restorable),
                 name=name, tag=tag)
        for d in restorable:
            ok = yield self.verifier.check(d)
            if not ok:
                raise RegistryError("MANIFEST_BLOB_UNKNOWN", "manifest references an unknown blob",
                                    detail={"digest": str(d)})
            yield self._push(name, d, self.cache.blob_path(d))
        yield self.tags.put(name, tag, str(digest))

    def list_tags(self, name: str) -> Deferred[list[str] | None]:
        return self.tags.tags(name)

    def list_repositories(self) -> Deferred[list[str]]:
        return self.tags.repositories()

    # -- deletes ---------------------------------------------------------------------------------

    def delete_tag(self, name: str, tag: str) -> Deferred[bool]:
        return self.tags.delete(name, tag)

    @inlineCallbacks
    def delete_manifest(self, name: str, digest: Digest) -> Any:
        tags = (yield self.tags.tags(name)) or []
        untagged = False
        for tag in tags:
            current = yield self.tags.get(name, tag)
            if current == str(digest):
                removed = yield self.tags.delete(name, tag, str(digest))
                untagged = untagged or removed
        had_bytes = yield self.delete_blob(name, digest)
        return untagged or had_bytes

    @inlineCallbacks
    def delete_blob(self, name: str, digest: Digest) -> Any:
        cached = yield deferToThread(self.cache.delete, digest)
        if self.origins is None:
            return cached
        try:
            on_origins = yield self.origins.delete(name, digest)
        except Exception as e:
            log.error("delete of {digest} ({name}) on the origins failed: {error}", digest=str(digest),
                      name=name, error=str(e))
            raise RegistryError("UNAVAILABLE", f"deleting the blob on the origins failed: {str(e)[:300]}",
                                status=503) from None
        return cached or on_origins
