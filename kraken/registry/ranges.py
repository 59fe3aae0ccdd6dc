"""Byte ranges: the upload ``Content-Range``/``Range`` headers and blob ``Range`` requests (sans-IO).

Uploads use the registry convention: ``Content-Range: <start>-<end>`` with *end inclusive*
(``bytes `` prefix and ``/total`` suffix tolerated), and the server reports progress as
``Range: 0-<offset - 1>`` (``0-0`` for an empty session, as docker/distribution does).
"""

from __future__ import annotations

import re

from kraken.registry.errors import RegistryError

_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?(\d{1,19})-(\d{1,19})(?:/(?:\d{1,19}|\*))?")
_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


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

    Several ranges are answered with the whole blob (RFC 9110 allows ignoring ``Range``).
    Unsatisfiable or malformed single ranges raise 416 with ``Content-Range: bytes */size``.
    """
    if header is None or "," in header:
        return None
    m = _RANGE.fullmatch(header.strip().replace(" ", ""))
    unsatisfiable = RegistryError(
        "RANGE_INVALID",
        f"range {header[:100]!r} not satisfiable for a blob of {size} bytes",
        status=416,
        headers={"Content-Range": f"bytes */{size}"},
    )
    if m is None:
        raise unsatisfiable
    first, last = m.group(1), m.group(2)
    if not first:
        if not last or int(last) == 0:
            raise unsatisfiable
        n = min(int(last), size)
        return size - n, n
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise unsatisfiable
    return start, end - start + 1
