"""Elixir terms as Python values: atoms, equality, Erlang term order, inspect, JSON conversion.

nil/true/false are ``None``/``True``/``False``; maps are dicts, lists are lists, tuples are
tuples, binaries are ``str``. Only ``nil`` and ``false`` are falsy.
"""

from __future__ import annotations

import math
from typing import Any


class ExprError(Exception):
    """An expression failed: *kind* is the Elixir-style error class shown to users."""

    def __init__(
        self, message: str, kind: str = "RuntimeError", pos: int | None = None, source: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.pos = pos
        self.source = source

    def locate(self, pos: int | None, source: str | None = None) -> ExprError:
        if self.pos is None and pos is not None:
            self.pos = pos
        if self.source is None and source is not None:
            self.source = source
        return self

    def __str__(self) -> str:
        text = f"({self.kind}) {self.message}"
        if self.source is not None:
            where = ""
            if self.pos is not None:
                line = self.source.count("\n", 0, self.pos) + 1
                col = self.pos - (self.source.rfind("\n", 0, self.pos) + 1) + 1
                where = f" at {line}:{col}"
            shown = self.source if len(self.source) <= 200 else self.source[:200] + "..."
            text += f"{where} in {shown!r}"
        return text


class LimitError(ExprError):
    """An expression exceeded a step, depth or size bound; *limit* names which, for metrics."""

    def __init__(self, message: str, limit: str = "expression") -> None:
        super().__init__(message, "LimitError")
        self.limit = limit


class Atom:
    """An Elixir atom other than nil/true/false; leaves the evaluator as its name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Atom) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("atom", self.name))

    def __repr__(self) -> str:
        return f":{self.name}"


def truthy(value: Any) -> bool:
    return value is not None and value is not False


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_atom(value: Any) -> bool:
    return value is None or isinstance(value, (bool, Atom))


def atom_name(value: Any) -> str:
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value.name


def _rank(value: Any) -> int:
    if is_number(value):
        return 0
    if is_atom(value):
        return 1
    if callable(value):
        return 2
    if isinstance(value, tuple):
        return 3
    if isinstance(value, dict):
        return 4
    if isinstance(value, list):
        return 5
    if isinstance(value, str):
        return 6
    return 2


def term_eq(a: Any, b: Any, strict: bool = False) -> bool:
    """``==`` (``1 == 1.0``) or, with *strict*, ``===``."""
    if is_number(a) and is_number(b):
        if strict and type(a) is not type(b):
            return False
        return a == b
    ra, rb = _rank(a), _rank(b)
    if ra != rb:
        return False
    if ra == 1:
        return a is b or a == b if not isinstance(a, bool) else a is b
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(term_eq(x, y, strict) for x, y in zip(a, b))
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        for k, v in a.items():
            if k not in b or not term_eq(v, b[k], strict):
                return False
        return True
    return a == b


def term_cmp(a: Any, b: Any) -> int:
    """Erlang term order: number < atom < function < tuple < map < list < binary."""
    ra, rb = _rank(a), _rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if ra == 0:
        return (a > b) - (a < b)
    if ra == 1:
        na, nb = atom_name(a), atom_name(b)
        return (na > nb) - (na < nb)
    if ra == 6:
        ea, eb = a.encode(), b.encode()
        return (ea > eb) - (ea < eb)
    if ra == 3:
        if len(a) != len(b):
            return -1 if len(a) < len(b) else 1
        return _seq_cmp(a, b)
    if ra == 5:
        return _seq_cmp(a, b)
    if ra == 4:
        if len(a) != len(b):
            return -1 if len(a) < len(b) else 1
        ka, kb = sorted_terms(list(a)), sorted_terms(list(b))
        c = _seq_cmp(ka, kb)
        if c:
            return c
        return _seq_cmp([a[k] for k in ka], [b[k] for k in kb])
    return 0


def _seq_cmp(a: Any, b: Any) -> int:
    for x, y in zip(a, b):
        c = term_cmp(x, y)
        if c:
            return c
    return (len(a) > len(b)) - (len(a) < len(b))


class _Key:
    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: _Key) -> bool:
        return term_cmp(self.v, other.v) < 0


def sort_key(value: Any) -> _Key:
    return _Key(value)


def sorted_terms(values: list[Any]) -> list[Any]:
    return sorted(values, key=_Key)


def type_name(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, tuple):
        return "tuple"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, Atom):
        return "atom"
    return "function"


def format_float(value: float) -> str:
    if not math.isfinite(value):
        return repr(value)
    text = repr(value)
    if "e" in text:
        mantissa, exp = text.split("e")
        if "." not in mantissa:
            mantissa += ".0"
        return f"{mantissa}e{int(exp)}"
    return text


def inspect(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return atom_name(value)
    if isinstance(value, Atom):
        return f":{value.name}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(inspect(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "{" + ", ".join(inspect(v) for v in value) + "}"
    if isinstance(value, dict):
        return "%{" + ", ".join(f"{inspect(k)} => {inspect(v)}" for k, v in value.items()) + "}"
    return f"#Function<{getattr(value, '__name__', 'fn')}>"


def to_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return atom_name(value)
    if isinstance(value, Atom):
        return value.name
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "".join(value)
    raise ExprError(
        f"protocol String.Chars not implemented for {inspect(value)} of type {type_name(value)}",
        "Protocol.UndefinedError",
    )


def to_json(value: Any) -> Any:
    """A JSON-able copy: tuples become lists, atoms their names, map keys strings."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else to_string_lenient(k)): to_json(v) for k, v in value.items()}
    if isinstance(value, Atom):
        return value.name
    return inspect(value)


def to_string_lenient(value: Any) -> str:
    try:
        return to_string(value)
    except ExprError:
        return inspect(value)
