"""What the registry API needs from the place blobs and tags live.

The proxy implements it over a local CAS, the origin cluster and the build-index; the agent
over P2P downloads and the build-index. Manifests are blobs too (namespace = repository).
Every method returns a Deferred; failures the client should see are ``RegistryError``\\ s.
Digests are :class:`~kraken.core.digest.Digest` objects; tag values are the strings the tag
source keeps (the API parses them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from kraken.core.digest import Digest


class RegistryStorage(Protocol):
    read_only: bool

    def blob_size(self, name: str, digest: Digest) -> Deferred[int | None]:
        """The blob's size, or ``None`` when it is unknown."""

    def blob_path(self, name: str, digest: Digest) -> Deferred[str]:
        """A local path of the complete, verified blob; fails with ``BLOB_UNKNOWN``."""

    def commit_blob(self, name: str, digest: Digest, path: Path) -> Deferred[Any]:
        """Take over the verified file at *path* (moved or deleted) as blob *digest* of *name*."""

    def mount_blob(self, source: str | None, name: str, digest: Digest) -> Deferred[bool]:
        """Make an existing blob available in *name*; ``False`` when it does not exist."""

    def resolve_tag(self, name: str, tag: str) -> Deferred[str | None]:
        """The digest *name*:*tag* points at now, or ``None``."""

    def put_tag(self, name: str, tag: str, digest: Digest) -> Deferred[Any]: ...

    def list_tags(self, name: str) -> Deferred[list[str] | None]:
        """Every tag of *name*, or ``None`` when the repository is unknown."""

    def list_repositories(self) -> Deferred[list[str]]: ...

    def delete_blob(self, name: str, digest: Digest) -> Deferred[bool]:
        """Remove the blob's bytes wherever this registry keeps them; ``False`` when it had none."""

    def delete_manifest(self, name: str, digest: Digest) -> Deferred[bool]:
        """Remove every tag of *name* on *digest*, then the manifest's bytes; ``False`` if neither."""

    def delete_tag(self, name: str, tag: str) -> Deferred[bool]:
        """Remove *name*:*tag* (not the manifest); ``False`` when there is no such tag."""
