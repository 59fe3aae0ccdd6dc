"""Mappings (``prepare``, ``transform``, ``error``, ``compose`` ...): JSON templates whose
strings are expressions when they contain ``args`` and literals otherwise.

A mapping object yields a new object with exactly its keys; arrays map element-wise;
numbers, booleans and null are literals. An absent (or ``false``) mapping passes its input.
A mapping may name the same part of its input twice, so its output is measured: one that
expands past ``pipeline.max_value_bytes`` is a ``LimitError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from kraken.pipeline.expr import ExprError, compile_expression, to_json
from kraken.pipeline.expr.functions import ValueLimits, check_value
from kraken.pipeline.expr.sizes import measure

Template = Callable[[Any], Any]

# ``args``, ``args['a']``, ``args["a"]['b']``...: plain lookups, evaluated without the interpreter.
_PATH = re.compile(r"""\s*args(\[\s*(?:'[^'"\\#]*'|"[^'"\\#]*")\s*\])*\s*""")
_KEY = re.compile(r"""\[\s*(?:'([^']*)'|"([^"]*)")\s*\]""")


class DefinitionError(Exception):
    """A definition is invalid; *field* names where (``components[2].condition``)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field


MAX_DEPTH = 32


def compile_template(
    spec: Any, helpers: Mapping[str, Callable[..., Any]], field: str, depth: int = 0
) -> Template:
    if depth > MAX_DEPTH:
        raise DefinitionError(f"mapping nested deeper than {MAX_DEPTH} levels", field)
    if isinstance(spec, dict):
        items = [(k, compile_template(v, helpers, f"{field}.{k}", depth + 1)) for k, v in spec.items()]
        return lambda args: {k: f(args) for k, f in items}
    if isinstance(spec, list):
        parts = [compile_template(v, helpers, f"{field}[{i}]", depth + 1) for i, v in enumerate(spec)]
        return lambda args: [f(args) for f in parts]
    if isinstance(spec, str) and "args" in spec:
        return compile_code(spec, helpers, field)
    return lambda args: spec


def compile_code(source: Any, helpers: Mapping[str, Callable[..., Any]], field: str) -> Template:
    if not isinstance(source, str):
        raise DefinitionError(f"expected an expression string, got {source!r}", field)
    try:
        expr = compile_expression(source, helpers)
    except ExprError as e:
        raise DefinitionError(str(e), field) from None
    evaluate = expr.evaluate

    def slow(args: Any) -> Any:
        return to_json(evaluate(args))

    if _PATH.fullmatch(source):
        keys = [a or b for a, b in _KEY.findall(source)]

        def path(args: Any) -> Any:
            value = args
            for key in keys:
                if isinstance(value, dict):
                    value = value.get(key)
                elif value is None:
                    return None
                else:
                    return slow(args)
            return value

        return path
    return slow


def compile_mapping(
    spec: Any, helpers: Mapping[str, Callable[..., Any]], field: str, measured: bool = True
) -> Template | None:
    """``None`` for an absent mapping (pass-through); a mapping must be an object. Its output
    is checked against the value limits unless the caller measures it (*measured* false)."""
    if spec is None or spec is False:
        return None
    if not isinstance(spec, dict):
        raise DefinitionError(f"a mapping must be a JSON object, got {type(spec).__name__}", field)
    template = compile_template(spec, helpers, field)
    if not measured:
        return template
    return MeasuredMapping(template, spec)


class MeasuredMapping:
    """A mapping whose output is checked against the value limits.

    A mapping made of literals and plain lookups (``args['a']``) copies at most its lookups'
    worth of its input, so when the input's size is known (:meth:`bounded`) and that bound is
    within the limits, the output is not measured at all."""

    __slots__ = ("depth", "fixed", "lookups", "template")

    def __init__(self, template: Template, spec: Any) -> None:
        self.template = template
        shape = _shape(spec)
        # None: an expression somewhere, whose output is only bounded by the limits themselves
        self.lookups, self.fixed, self.depth = shape if shape is not None else (-1, 0, 0)

    def __call__(self, args: Any) -> Any:
        out = self.template(args)
        check_value(out, "mapping output")
        return out

    def bounded(self, args: Any, size: tuple[int, int] | None) -> Any:
        """The output for *args* whose (expanded size, depth) is at most *size* (None: unknown)."""
        if size is not None and self.lookups >= 0:
            if (
                self.lookups * size[0] + self.fixed <= ValueLimits.max_bytes
                and size[1] + self.depth <= ValueLimits.max_nesting
            ):
                return self.template(args)
        return self(args)


def _shape(spec: Any) -> tuple[int, int, int] | None:
    """(lookups of the input, size of the literal parts, depth added) of a mapping made of
    literals and plain lookups; None if it holds an expression."""
    if isinstance(spec, str) and "args" in spec:
        return (1, 0, 0) if _PATH.fullmatch(spec) else None
    if isinstance(spec, (dict, list)):
        lookups, fixed, depth = 0, 2, 0
        items = spec.items() if isinstance(spec, dict) else ((None, v) for v in spec)
        for key, value in items:
            inner = _shape(value)
            if inner is None:
                return None
            lookups += inner[0]
            fixed += inner[1] + 1 + (len(key) + 3 if isinstance(key, str) else 0)
            depth = max(depth, inner[2])
        return lookups, fixed, depth + 1
    return 0, measure(spec, 1 << 62)[0], 0
