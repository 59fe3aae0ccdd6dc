"""The OCI 1.1 referrers API's data (sans-IO): descriptors, filtering, pages, the index document.

A manifest whose ``subject`` names another manifest is a *referrer* of that subject.
``GET /v2/<name>/referrers/<subject>`` answers an image index listing the descriptor of every
referrer pushed to *name*: ``mediaType``, ``digest``, ``size``, ``artifactType`` (the
manifest's ``artifactType``, else an image manifest's ``config.mediaType``) and
``annotations``. Where the index lives (a local directory, or the build-index shared by the
proxy and the agents) is a :class:`ReferrerIndex`; :func:`forget_manifest` is the one call a
manifest delete makes to keep it consistent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed

from kraken.core.digest import Digest
from kraken.registry import manifests as mf
from kraken.registry.errors import RegistryError

FILTER_HEADER = "OCI-Filters-Applied"
SUBJECT_HEADER = "OCI-Subject"
PAGE_ENTRIES = 1000
PAGE_BYTES = 4 * 1024 * 1024  # a page's descriptors at most (one descriptor may be larger)
MAX_REFERRERS = 10_000  # referrers of one subject in one repository
MAX_DESCRIPTOR = mf.MAX_MANIFEST_SIZE  # a descriptor's JSON: annotations come from one manifest


def descriptor(manifest: mf.Manifest, digest: Digest, size: int) -> dict[str, Any]:
    """The referrers-index entry of the manifest *digest* (*size* bytes) parsed as *manifest*."""
    entry: dict[str, Any] = {"mediaType": manifest.media_type, "digest": str(digest), "size": size}
    if manifest.artifact_type:
        entry["artifactType"] = manifest.artifact_type
    if manifest.annotations:
        entry["annotations"] = dict(manifest.annotations)
    return entry


def check_descriptor(raw: Any) -> dict[str, Any]:
    """*raw* if it is a descriptor :func:`descriptor` could have made, else ``ValueError``."""
    if not isinstance(raw, dict):
        raise ValueError("a referrer descriptor is a JSON object")
    if set(raw) - {"mediaType", "digest", "size", "artifactType", "annotations"}:
        raise ValueError(f"unexpected descriptor fields {sorted(set(raw))[:10]}")
    if not isinstance(raw.get("mediaType"), str) or raw["mediaType"] not in mf.SUPPORTED:
        raise ValueError("descriptor mediaType must be a manifest media type")
    Digest.parse(raw["digest"] if "digest" in raw else "")  # non-strings raise ValueError
    size = raw.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= mf.MAX_MANIFEST_SIZE:
        raise ValueError("descriptor size must be a manifest's size")
    if "artifactType" in raw and not (isinstance(raw["artifactType"], str) and raw["artifactType"]):
        raise ValueError("descriptor artifactType must be a non-empty string")
    annotations = raw.get("annotations", {})
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        raise ValueError("descriptor annotations must map strings to strings")
    return raw


def select(
    entries: Iterable[dict[str, Any]], artifact_type: str | None, last: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of *entries* (by digest, after *last*, of *artifact_type* if given) and the next
    page's ``last``, or ``None`` when this page is the final one."""
    chosen = sorted(
        (e for e in entries if artifact_type is None or e.get("artifactType") == artifact_type),
        key=lambda e: str(e["digest"]),
    )
    if last:
        chosen = [e for e in chosen if e["digest"] > last]
    page: list[dict[str, Any]] = []
    used = 0
    for entry in chosen:
        cost = len(json.dumps(entry, separators=(",", ":")))
        if page and (len(page) >= PAGE_ENTRIES or used + cost > PAGE_BYTES):
            return page, str(page[-1]["digest"])
        page.append(entry)
        used += cost
    return page, None


def index_document(page: list[dict[str, Any]]) -> bytes:
    """The image index the referrers API answers."""
    doc = {"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": page}
    return json.dumps(doc, separators=(",", ":")).encode()


class ReferrerIndex(Protocol):
    """Where referrers are kept; failures the client should see are ``RegistryError``\\ s."""

    def add(self, repo: str, subject: Digest, entry: dict[str, Any]) -> Deferred[Any]:
        """Record *entry* (a :func:`descriptor`) as a referrer of *subject* in *repo* (idempotent)."""

    def remove(self, repo: str, subject: Digest, digest: Digest) -> Deferred[Any]:
        """Forget the referrer *digest* of *subject* in *repo*; absent entries are no error."""

    def page(
        self, repo: str, subject: Digest, artifact_type: str | None, last: str | None
    ) -> Deferred[tuple[list[dict[str, Any]], str | None]]:
        """A page of :func:`select` over the referrers of *subject* in *repo*."""


def forget_manifest(index: ReferrerIndex, repo: str, digest: Digest, body: bytes) -> Deferred[Any]:
    """Drop the referrers entry of the manifest *digest* (bytes *body*) of *repo*, if it has one.

    The manifest delete calls this before it removes the manifest, so an index entry never
    outlives its manifest. Bodies that do not parse, or have no ``subject``, have no entry.
    """
    try:
        manifest = mf.parse_manifest(body)
    except RegistryError:
        return succeed(None)
    if manifest.subject is None:
        return succeed(None)
    return index.remove(repo, Digest.parse(manifest.subject), digest)
