"""Byte ranges: the upload ``Content-Range``/``Range`` headers and blob ``Range`` requests (sans-IO).

Uploads use the registry convention: ``Content-Range: <start>-<end>`` with *end inclusive*
(``bytes `` prefix and ``/total`` suffix tolerated), and the server reports progress as
``Range: 0-<offset - 1>`` (``0-0`` for an empty session, as docker/distribution does).
"""

from __future__ import annotations

import re

from kraken.registry.errors import RegistryError

_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?(\d{1,19})-(\d{1,19})(?:/(?:\d{1,19}|\*))?")
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.IGNORECASE)
MAX_RANGE_HEADER = 1000  # longer Range headers are ignored


def progress_header(offset: int) -> str:
    """The ``Range`` value reporting *offset* bytes received."""
    return f"0-{max(offset - 1, 0)}"


def parse_chunk_range(header: str | None, offset: int, length: int | None) -> int | None:
    """Check a chunk's ``Content-Range`` against the session *offset* and the body *length*.

    Returns the chunk's byte count (``None`` when unknown: no header and no length). Raises a
    416 ``RANGE_INVALID`` for malformed, out-of-order or inconsistent ranges, with the
    session's progress in a ``Range`` header so the client can resume.
    """
    if header is None:
        return length

    def invalid(message: str) -> RegistryError:
        return RegistryError(
            "RANGE_INVALID", message, status=416, headers={"Range": progress_header(offset)}
        )

    m = _CONTENT_RANGE.fullmatch(header.strip())
    if m is None:
        raise invalid(f"malformed Content-Range {header[:100]!r}; expected <start>-<end>")
    start, end = int(m.group(1)), int(m.group(2))
    if end < start:
        raise invalid(f"Content-Range {start}-{end} ends before it starts")
    if start != offset:
        raise invalid(f"chunk starts at {start} but the upload has {offset} bytes; send {offset}- next")
    size = end - start + 1
    if length is not None and length != size:
        raise invalid(f"Content-Range {start}-{end} is {size} bytes but Content-Length is {length}")
    return size


def parse_get_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, length)`` for a single-range ``Range`` header, ``None`` to send everything.

    Follows RFC 9110 section 14: a header that is not a ``bytes`` range set (another unit, or
    text that does not parse) and several ranges are ignored (the whole blob is sent); a
    last-pos past the end stops at the end, and a suffix longer than the blob selects all of
    it (section 14.1.2), which is answered ``206`` with the full ``Content-Range``. A range
    whose last-pos comes before its first-pos, that starts past the end, or a ``-0`` suffix
    raises 416 with ``Content-Range: bytes */size``.
    """
    if header is None or len(header) > MAX_RANGE_HEADER or "," in header:
        return None
    m = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if m is None or (not m.group(1) and not m.group(2)):
        return None
    unsatisfiable = RegistryError(
        "RANGE_INVALID",
        f"range {header[:100]!r} not satisfiable for a blob of {size} bytes",
        status=416,
        headers={"Content-Range": f"bytes */{size}"},
    )
    first, last = m.group(1), m.group(2)
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise unsatisfiable
        if size == 0:
            return None  # nothing to cut a suffix from: the whole (empty) blob
        n = min(suffix, size)
        return size - n, n
    start = int(first)
    if last and int(last) < start:
        raise unsatisfiable
    if start >= size:
        raise unsatisfiable
    end = min(int(last), size - 1) if last else size - 1
    return start, end - start + 1
