"""``String`` functions; results are checked against the budget's size limit."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from kraken.pipeline.expr.functions import Budget, bad_arg
from kraken.pipeline.expr.terms import Atom, ExprError, LimitError, inspect

_INTEGER = re.compile(r"[+-]?[0-9]+")


def _str(name: str, s: Any) -> str:
    if not isinstance(s, str):
        raise ExprError(f"String.{name} expects a string, got: {inspect(s)}", "FunctionClauseError")
    return s


def s_split(ctx: Budget, s: Any, sep: Any = None, opts: Any = None) -> list[str]:
    s = _str("split", s)
    if sep is None:
        return s.split()
    seps = sep if isinstance(sep, list) else [sep]
    if not all(isinstance(x, str) for x in seps):
        raise bad_arg("String.split/2 expects a string pattern, got", sep)
    parts = [s]
    for x in seps:
        if x == "":
            parts = ["", *list(s), ""] if s else [""]
            break
        parts = [q for p in parts for q in p.split(x)]
    if isinstance(opts, list) and any(t == (Atom("trim"), True) for t in opts):
        parts = [p for p in parts if p != ""]
    return ctx.size(parts)


def s_slice(ctx: Budget, s: Any, start: Any, length: Any = None) -> str:
    s = _str("slice", s)
    if isinstance(start, list) and length is None:
        return "".join(s[i] for i in start if -len(s) <= i < len(s))
    if not isinstance(start, int) or not isinstance(length, int):
        raise bad_arg("String.slice/3 expects integers, got", (start, length))
    if start < 0:
        start += len(s)
        if start < 0:
            return ""
    return s[start : start + max(length, 0)]


def s_to_integer(ctx: Budget, s: Any) -> int:
    text = _str("to_integer", s)
    if len(text) > 1000 or not _INTEGER.fullmatch(text):
        raise bad_arg("String.to_integer/1: not a textual representation of an integer", s)
    return int(text)


def s_to_float(ctx: Budget, s: Any) -> float:
    text = _str("to_float", s)
    try:
        if "." not in text or len(text) > 1000:
            raise ValueError
        return float(text)
    except ValueError:
        raise bad_arg("String.to_float/1: not a textual representation of a float", s) from None


def s_duplicate(ctx: Budget, s: Any, n: Any) -> str:
    s = _str("duplicate", s)
    if not isinstance(n, int) or n < 0:
        raise bad_arg("String.duplicate/2 expects a non-negative integer, got", n)
    if len(s) * n > ctx.max_size:
        raise LimitError(f"string longer than {ctx.max_size} characters")
    return s * n


def s_pad(leading: bool) -> Callable[..., str]:
    def pad(ctx: Budget, s: Any, n: Any, p: Any = " ") -> str:
        s = _str("pad", s)
        if not isinstance(n, int) or n > ctx.max_size or not isinstance(p, str) or not p:
            raise bad_arg("String.pad_* expects a length and a non-empty padding, got", (n, p))
        missing = max(n - len(s), 0)
        fill = (p * (missing // len(p) + 1))[:missing]
        return fill + s if leading else s + fill

    return pad


def s_contains(ctx: Budget, s: Any, sub: Any) -> bool:
    subs = sub if isinstance(sub, list) else [sub]
    return any(_str("contains?", x) in _str("contains?", s) for x in subs)


def s_replace(ctx: Budget, s: Any, pattern: Any, repl: Any) -> str:
    s, pattern, repl = _str("replace", s), _str("replace", pattern), _str("replace", repl)
    if pattern == "":
        raise bad_arg("String.replace/3 with an empty pattern", pattern)
    if s.count(pattern) * max(len(repl) - len(pattern), 0) + len(s) > ctx.max_size:
        raise LimitError(f"string longer than {ctx.max_size} characters")
    return s.replace(pattern, repl)


def _affixes(p: Any) -> tuple[str, ...]:
    items = p if isinstance(p, list) else [p]
    return tuple(_str("starts_with?/ends_with?", x) for x in items)


STRING: dict[str, Callable[..., Any]] = {
    "length": lambda ctx, s: len(_str("length", s)),
    "upcase": lambda ctx, s: _str("upcase", s).upper(),
    "downcase": lambda ctx, s: _str("downcase", s).lower(),
    "capitalize": lambda ctx, s: _str("capitalize", s)[:1].upper() + s[1:].lower(),
    "trim": lambda ctx, s: _str("trim", s).strip(),
    "trim_leading": lambda ctx, s: _str("trim_leading", s).lstrip(),
    "trim_trailing": lambda ctx, s: _str("trim_trailing", s).rstrip(),
    "split": s_split,
    "contains?": s_contains,
    "starts_with?": lambda ctx, s, p: _str("starts_with?", s).startswith(_affixes(p)),
    "ends_with?": lambda ctx, s, p: _str("ends_with?", s).endswith(_affixes(p)),
    "replace": s_replace,
    "slice": s_slice,
    "to_integer": s_to_integer,
    "to_float": s_to_float,
    "reverse": lambda ctx, s: _str("reverse", s)[::-1],
    "duplicate": s_duplicate,
    "at": lambda ctx, s, i: _str("at", s)[i] if isinstance(i, int) and -len(s) <= i < len(s) else None,
    "first": lambda ctx, s: _str("first", s)[:1] or None,
    "last": lambda ctx, s: _str("last", s)[-1:] or None,
    "pad_leading": s_pad(True),
    "pad_trailing": s_pad(False),
    "graphemes": lambda ctx, s: list(ctx.size(_str("graphemes", s))),
    "codepoints": lambda ctx, s: list(ctx.size(_str("codepoints", s))),
    "equivalent?": lambda ctx, a, b: _str("equivalent?", a) == _str("equivalent?", b),
}
