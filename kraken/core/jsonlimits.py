"""JSON from untrusted peers: nesting depth and number length limits, refused as ``ValueError``.

``json.loads`` raises ``RecursionError`` on deeply nested documents and a bare ``ValueError``
on integers longer than ``sys.get_int_max_str_digits()``; a document that parses but nests
hundreds of levels deep still breaks whatever walks it recursively afterwards (``repr``, the
encoder, validators). :func:`loads` turns all of these into :class:`JSONLimitError`.

Documents from other components and upstream services are read with ``strict=True``: ``NaN``,
``Infinity`` and repeated keys in an object (which parsers resolve differently, so two readers of
one signed manifest could see two documents) are refused as :class:`NotJSONError`, and bytes
must be UTF-8.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

MAX_DEPTH = 100


class JSONLimitError(ValueError):
    """The document is well-formed but over a limit; the message completes "the document ..."."""


class NotJSONError(ValueError):
    """The document holds what JSON (or a strict reader) does not allow: NaN, Infinity, a repeated key."""


def _no_constant(name: str) -> Any:
    raise NotJSONError(f"{name} is not a JSON value")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise NotJSONError(f"key {key[:100]!r} appears more than once in an object")
            seen.add(key)
    return value


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH, *, strict: bool = False) -> Any:
    """``json.loads`` with limits: JSONDecodeError or UnicodeDecodeError if malformed,
    :class:`JSONLimitError` if nested deeper than *max_depth* or holding a too long integer;
    with *strict*, :class:`NotJSONError` for NaN, Infinity and repeated keys, and UnicodeDecodeError
    for bytes that are not UTF-8 (``json.loads`` also takes UTF-16/32 and encoded surrogates)."""
    try:
        if strict:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            value = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
        else:
            value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, NotJSONError):
        raise
    except RecursionError:
        raise JSONLimitError(f"nests deeper than {max_depth} levels") from None
    except ValueError as e:
        raise JSONLimitError(f"holds a number too long to read ({e})") from None
    if _openers(raw) > max_depth and depth_over(value, max_depth):
        raise JSONLimitError(f"nests deeper than {max_depth} levels")
    return value


def _openers(raw: bytes | str) -> int:
    if isinstance(raw, str):
        return raw.count("[") + raw.count("{")
    return raw.count(b"[") + raw.count(b"{")


def depth_over(value: Any, max_depth: int) -> bool:
    """Whether *value* nests more than *max_depth* lists/dicts (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False
