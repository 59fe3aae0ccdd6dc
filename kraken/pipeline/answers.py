"""JSON in and out of the pipeline API, with limits.

In: request bodies are parsed with a nesting limit, refusing integers too long to convert and
the non-JSON constants ``NaN``/``Infinity``; every failure is a :class:`BadBody` (a ``400``).

Out: an answer is measured before it is encoded (shared parts count each time they occur,
so a value cannot expand past ``max_response_bytes`` in the encoder), then encoded with
``allow_nan=False``. JSON has no NaN or infinity: a non-finite float in a result (a lambda's
or a remote service's) is written as ``null``, as expression results always were.
"""

from __future__ import annotations

import json
import math
from typing import Any

from kraken.core.jsonlimits import depth_over
from kraken.pipeline.expr.sizes import measure

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MAX_JSON_DEPTH = 200
ENVELOPE_DEPTH = 16  # levels an answer adds around an event (error event, debug history)


class BadBody(ValueError):
    """A request body that is not JSON we accept; the message says why, *limit* which limit
    refused it (None: it is not JSON at all)."""

    def __init__(self, message: str, limit: str | None = None) -> None:
        super().__init__(message)
        self.limit = limit


class TooLarge(Exception):
    """An answer over a size or nesting limit."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


def _no_constant(name: str) -> Any:
    raise BadBody(f"{name} is not JSON", "json_constant")


def parse_body(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON document in *raw*; :class:`BadBody` if malformed, too deep or with a number
    too long to read."""
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except BadBody:
        raise
    except RecursionError:
        raise BadBody(f"JSON nested too deeply (more than {max_depth} levels)", "json_depth") from None
    except UnicodeDecodeError as e:
        raise BadBody(str(e)) from None
    except json.JSONDecodeError as e:
        raise BadBody(str(e)) from None
    except ValueError as e:  # an integer over sys.get_int_max_str_digits()
        raise BadBody(f"a number too long to read ({e})", "json_number") from None
    if raw.count(b"[") + raw.count(b"{") > max_depth and depth_over(value, max_depth):
        raise BadBody(f"JSON nested too deeply (more than {max_depth} levels)", "json_depth")
    return value


def encode(value: Any, max_bytes: int = MAX_RESPONSE_BYTES, max_depth: int = MAX_JSON_DEPTH) -> bytes:
    """*value* as compact UTF-8 JSON, or :class:`TooLarge` before anything big is built."""
    try:
        size, depth = measure(value, max_bytes)
    except ValueError as e:
        raise TooLarge(f"the answer cannot be encoded: {e}", "response_bytes") from None
    if size > max_bytes:
        raise TooLarge(f"the answer expands to more than {max_bytes} bytes", "response_bytes")
    if depth > max_depth:
        raise TooLarge(f"the answer nests deeper than {max_depth} levels", "response_nesting")
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:
        text = json.dumps(finite(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def finite(value: Any) -> Any:
    """A copy of *value* with NaN and infinities as ``None`` (depth already bounded)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
