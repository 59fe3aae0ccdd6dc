"""Manifest media types, what a manifest references, and ``Accept`` negotiation (sans-IO)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kraken.core import jsonlimits
from kraken.registry.errors import RegistryError
from kraken.registry.names import parse_digest

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_V1 = "application/vnd.docker.distribution.manifest.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

IMAGE_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
LIST_TYPES = (DOCKER_LIST, OCI_INDEX)
SUPPORTED = (*IMAGE_TYPES, *LIST_TYPES)
# Layers a registry is not expected to hold (Windows base layers and the like).
FOREIGN_LAYERS = (
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
)
MAX_MANIFEST_SIZE = 4 * 1024 * 1024
MAX_BLOB_SIZE = 2**63 - 1  # descriptors' sizes are int64 in the OCI image spec


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: its media type, the blobs and child manifests it needs."""

    media_type: str
    blobs: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    platforms: tuple[tuple[str, dict[str, Any]], ...] = field(default=())
    subject: str | None = None  # the digest this manifest refers to (OCI 1.1), maybe not pushed yet
    artifact_type: str | None = None  # ``artifactType``, else an image's ``config.mediaType``
    annotations: tuple[tuple[str, str], ...] = ()

    @property
    def is_list(self) -> bool:
        return self.media_type in LIST_TYPES


def _descriptor(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict) or not isinstance(item.get("digest"), str):
        raise RegistryError("MANIFEST_INVALID", f"{where} is not a descriptor with a digest")
    try:
        parse_digest(item["digest"])
    except RegistryError as e:
        raise RegistryError("MANIFEST_INVALID", f"{where}: {e.message}", detail=e.detail) from None
    size = item.get("size")
    in_range = isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= MAX_BLOB_SIZE
    if size is not None and not in_range:
        raise RegistryError("MANIFEST_INVALID", f"{where}: size must be an integer in 0..2^63-1")
    return item


def _annotations(doc: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    raw = doc.get("annotations")
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise RegistryError("MANIFEST_INVALID", "annotations must map strings to strings")
    return tuple(raw.items())


def _referrer_fields(doc: dict[str, Any], config_type: Any = None) -> dict[str, Any]:
    """What the referrers API needs of a manifest: ``subject``, ``artifactType``, ``annotations``."""
    subject = doc.get("subject")
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise RegistryError("MANIFEST_INVALID", "artifactType must be a string")
    if not artifact_type and isinstance(config_type, str) and config_type:
        artifact_type = config_type
    return {
        "subject": _descriptor(subject, "subject")["digest"] if subject is not None else None,
        "artifact_type": artifact_type or None,
        "annotations": _annotations(doc),
    }


def _infer_type(doc: dict[str, Any]) -> str:
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc:
        return OCI_MANIFEST
    if "fsLayers" in doc:
        return DOCKER_V1_SIGNED
    raise RegistryError("MANIFEST_INVALID", "cannot tell the manifest's media type")


def parse_manifest(body: bytes, content_type: str | None = None) -> Manifest:
    """Parse and check *body*; *content_type* (the PUT's header) must agree with its ``mediaType``."""
    if len(body) > MAX_MANIFEST_SIZE:
        raise RegistryError("SIZE_INVALID", f"manifest over {MAX_MANIFEST_SIZE} bytes", status=413)
    try:
        doc = jsonlimits.loads(body, strict=True)
    except jsonlimits.JSONLimitError as e:
        raise RegistryError("MANIFEST_INVALID", f"the manifest {e}") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise RegistryError("MANIFEST_INVALID", f"manifest is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(doc, dict):
        raise RegistryError("MANIFEST_INVALID", "manifest is not a JSON object")
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise RegistryError("MANIFEST_INVALID", "mediaType must be a string")
    header = (content_type or "").split(";")[0].strip() or None
    if header in ("application/json", "application/octet-stream"):
        header = None
    if declared and header and declared != header:
        raise RegistryError(
            "MANIFEST_INVALID",
            f"Content-Type {header} does not match the manifest's mediaType {declared}",
        )
    media_type = declared or header or _infer_type(doc)
    if media_type in (DOCKER_V1, DOCKER_V1_SIGNED):
        raise RegistryError("MANIFEST_INVALID", "Docker schema 1 manifests are not supported", status=415)
    if media_type not in SUPPORTED:
        raise RegistryError("MANIFEST_INVALID", f"unsupported manifest media type {media_type}", status=415)
    if doc.get("schemaVersion") != 2:
        raise RegistryError("MANIFEST_INVALID", "schemaVersion must be 2")
    if media_type in LIST_TYPES:
        items = doc.get("manifests")
        if not isinstance(items, list):
            raise RegistryError("MANIFEST_INVALID", "manifests must be a list")
        children, platforms = [], []
        for i, item in enumerate(items):
            d = _descriptor(item, f"manifests[{i}]")
            children.append(d["digest"])
            platform = d.get("platform")
            if isinstance(platform, dict):
                platforms.append((d["digest"], platform))
        return Manifest(media_type, children=tuple(children), platforms=tuple(platforms),
                        **_referrer_fields(doc))
    config = _descriptor(doc.get("config"), "config")
    blobs = [config["digest"]]
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise RegistryError("MANIFEST_INVALID", "layers must be a list")
    for i, item in enumerate(layers):
        d = _descriptor(item, f"layers[{i}]")
        if d.get("mediaType") not in FOREIGN_LAYERS:
            blobs.append(d["digest"])
    return Manifest(media_type, blobs=tuple(dict.fromkeys(blobs)),
                    **_referrer_fields(doc, config.get("mediaType")))


def parse_accept(headers: list[str]) -> list[str]:
    """The media types of ``Accept`` headers (q=0 dropped); an empty list accepts anything."""
    types: list[str] = []
    for header in headers:
        for part in header.split(","):
            fields = [f.strip() for f in part.split(";")]
            if not fields[0]:
                continue
            if any(f.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for f in fields[1:]):
                continue
            types.append(fields[0].lower())
    return types


def accepts(accepted: list[str], media_type: str) -> bool:
    if not accepted:
        return True
    major = media_type.split("/")[0]
    return any(a in (media_type, "*/*", f"{major}/*") for a in accepted)


def pick_platform(manifest: Manifest, os_name: str = "linux", arch: str = "amd64") -> str | None:
    """The child of a list for *os_name*/*arch*, used when a client cannot take lists."""
    for digest, platform in manifest.platforms:
        if platform.get("os") == os_name and platform.get("architecture") == arch:
            return digest
    return None
