"""Warming the origins for an image: which blobs an image needs (sans-IO), and asking the origins.

Used by the proxy's preheat webhook and prefetch endpoints: the manifest is read through the
origins (which fetch it from their backend or mirror upstream), its blobs listed (one level
into an index or manifest list), and every origin owning each blob is asked to fetch it
(``POST /namespace/<ns>/blobs/<d>/prefetch``), so the first agent that pulls finds it there.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from kraken.backends.base import BlobNotFound
from kraken.core import jsonlimits
from kraken.core.digest import Digest
from kraken.core.httpclient import HTTPStatusError
from kraken.p2p.origins import OriginCluster, ns_path

log = Logger(namespace="kraken.mirror.warm")

MANIFEST_RETRIES = (0.1, 0.2, 0.4)  # waits between the 4 tries of a manifest read


class NotAManifest(ValueError):
    pass


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int


@dataclass(frozen=True)
class ManifestRefs:
    blobs: tuple[Blob, ...]  # config and layers (blobs of an image manifest)
    children: tuple[Blob, ...]  # the manifests an index or a manifest list names


def manifest_refs(raw: bytes) -> ManifestRefs:
    """The descriptors a manifest, an index or a manifest list references; :class:`NotAManifest`."""
    try:
        doc = jsonlimits.loads(raw, strict=True)
    except (ValueError, UnicodeDecodeError) as e:
        raise NotAManifest(f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise NotAManifest("not a JSON object")

    def descriptors(items: Any, where: str) -> tuple[Blob, ...]:
        if items is None:
            return ()
        if not isinstance(items, list):
            raise NotAManifest(f"{where} is not a list")
        out = []
        for item in items:
            digest = item.get("digest") if isinstance(item, dict) else None
            size = item.get("size") if isinstance(item, dict) else None
            if not isinstance(digest, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise NotAManifest(f"{where} holds a descriptor without digest and size")
            try:
                Digest.parse(digest)
            except ValueError as e:
                raise NotAManifest(f"{where}: {e}") from None
            out.append(Blob(digest, size))
        return tuple(out)

    if "manifests" in doc:
        return ManifestRefs((), descriptors(doc["manifests"], "manifests"))
    config = doc.get("config")
    blobs = descriptors([config] if config is not None else [], "config") + descriptors(doc.get("layers"),
                                                                                        "layers")
    if not blobs:
        raise NotAManifest("neither config, layers nor manifests")
    return ManifestRefs(blobs, ())


class Warmer:
    def __init__(self, origins: OriginCluster, clock: IReactorTime, scratch: Path) -> None:
        self.origins = origins
        self.clock = clock
        self.scratch = scratch
        self.scratch.mkdir(parents=True, exist_ok=True)

    @inlineCallbacks
    def read_manifest(self, namespace: str, digest: str, retries: tuple[float, ...] = ()) -> Any:
        """The manifest's bytes through the origins; :class:`BlobNotFound` when none has it."""
        fd, name = tempfile.mkstemp(dir=self.scratch, suffix=".manifest")
        os.close(fd)
        tmp = Path(name)
        try:
            for wait in (*retries, None):
                try:
                    yield self.origins.download(namespace, Digest.parse(digest), str(tmp))
                    return tmp.read_bytes()
                except Exception:
                    if wait is None:
                        raise
                    yield deferLater(self.clock, wait, lambda: None)
        finally:
            tmp.unlink(missing_ok=True)

    @inlineCallbacks
    def image_blobs(self, namespace: str, digest: str, retries: tuple[float, ...] = ()) -> Any:
        """Every blob the image needs: the manifest, its children and their blobs (with sizes)."""
        raw = yield self.read_manifest(namespace, digest, retries)
        refs = manifest_refs(raw)
        out = [Blob(digest, len(raw)), *refs.blobs]
        for child in refs.children:
            try:
                child_raw = yield self.read_manifest(namespace, child.digest, retries)
            except BlobNotFound:
                log.warn("{ns}@{digest} names {child}, which the origins do not find", ns=namespace,
                         digest=digest, child=child.digest)
                continue
            out.append(child)
            out.extend(manifest_refs(child_raw).blobs)
        unique = {b.digest: b for b in out}
        return list(unique.values())

    @inlineCallbacks
    def prefetch(self, namespace: str, digest: str) -> Any:
        """Ask every origin owning *digest* to fetch it; the statuses (200 here, 202 started)."""
        d = Digest.parse(digest)
        owners = yield self.origins.owners(d)
        statuses = []
        for client in owners:
            url = f"{client.base}/namespace/{ns_path(namespace)}/blobs/{d}/prefetch"
            response = yield client.http.post(url, data=b"")
            body = yield response.content()
            if response.code not in (200, 202):
                raise HTTPStatusError("POST", url, response.code, body)
            statuses.append(response.code)
        return statuses

    @inlineCallbacks
    def prefetch_all(self, namespace: str, blobs: list[Blob]) -> Any:
        """Prefetch every blob in parallel; ``(triggered, failures)``."""
        results = yield DeferredList([self.prefetch(namespace, b.digest) for b in blobs], consumeErrors=True)
        failures = [f"{b.digest}: {r.getErrorMessage()[:200]}"
                    for b, (ok, r) in zip(blobs, results, strict=True) if not ok]
        for failure in failures:
            log.warn("prefetch in {ns} failed: {failure}", ns=namespace, failure=failure)
        return len(blobs) - len(failures), failures
