"""Validation of repository names, tags, digests and manifest references (sans-IO)."""

from __future__ import annotations

import re

from kraken.core.digest import Digest
from kraken.registry.errors import RegistryError

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[A-Za-z0-9=_-]+")
MAX_NAME_LENGTH = 255


def check_name(name: str) -> str:
    """*name* if it is a valid repository name (``test/alpine``), else ``NAME_INVALID``."""
    if len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise RegistryError("NAME_INVALID", "invalid repository name", detail={"name": name[:300]})
    return name


def is_tag(reference: str) -> bool:
    return _TAG.fullmatch(reference) is not None


def check_tag(tag: str) -> str:
    if not is_tag(tag):
        raise RegistryError("MANIFEST_INVALID", "invalid tag", detail={"tag": tag[:200]})
    return tag


def parse_digest(text: str | None) -> Digest:
    """The digest *text* names (``sha256:<hex>``, ``sha512:<hex>``), or ``DIGEST_INVALID`` (400)."""
    if not text:
        raise RegistryError("DIGEST_INVALID", "digest is missing")
    if not _DIGEST.fullmatch(text):
        raise RegistryError("DIGEST_INVALID", "invalid digest format", detail={"digest": text[:200]})
    try:
        return Digest.parse(text)
    except ValueError as e:
        raise RegistryError("DIGEST_INVALID", str(e), detail={"digest": text[:200]}) from None


def is_digest(reference: str) -> bool:
    return ":" in reference
