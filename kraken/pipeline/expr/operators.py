"""The operators of the expression language (arithmetic, ``<>``, ``++``, ``--``, ``..``, ``in``,
``=~``) and :func:`enumerable`, the list view of lists and maps they share with ``Enum``.

Results that could grow without bound are checked against the budget's size limit.
"""

from __future__ import annotations

import math
from typing import Any

from kraken.pipeline.expr.functions import Budget
from kraken.pipeline.expr.terms import (
    ExprError,
    LimitError,
    inspect,
    is_number,
    sorted_terms,
    term_eq,
    type_name,
)

MAX_INT_BITS = 4096


def _num(op: str, a: Any, b: Any) -> None:
    if not (is_number(a) and is_number(b)):
        raise ExprError(
            f"bad argument in arithmetic expression: {inspect(a)} {op} {inspect(b)}", "ArithmeticError"
        )


def _check_num(value: Any) -> Any:
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise LimitError(f"integer larger than {MAX_INT_BITS} bits")
    elif not math.isfinite(value):
        raise ExprError("bad argument in arithmetic expression (float overflow)", "ArithmeticError")
    return value


def op_add(ctx: Budget, a: Any, b: Any) -> Any:
    _num("+", a, b)
    return _check_num(a + b)


def op_sub(ctx: Budget, a: Any, b: Any) -> Any:
    _num("-", a, b)
    return _check_num(a - b)


def op_mul(ctx: Budget, a: Any, b: Any) -> Any:
    _num("*", a, b)
    return _check_num(a * b)


def op_div(ctx: Budget, a: Any, b: Any) -> Any:
    _num("/", a, b)
    if b == 0:
        raise ExprError("bad argument in arithmetic expression: division by zero", "ArithmeticError")
    return _check_num(a / b)


def op_pow(ctx: Budget, a: Any, b: Any) -> Any:
    _num("**", a, b)
    if isinstance(a, int) and isinstance(b, int):
        if b < 0:
            raise ExprError("bad argument in arithmetic expression: negative exponent", "ArithmeticError")
        if abs(a) > 1 and b * max(abs(a).bit_length(), 1) > MAX_INT_BITS:
            raise LimitError(f"integer larger than {MAX_INT_BITS} bits")
        return a**b
    try:
        return _check_num(float(a) ** float(b))
    except (OverflowError, ZeroDivisionError, ValueError):
        raise ExprError("bad argument in arithmetic expression", "ArithmeticError") from None


def op_concat(ctx: Budget, a: Any, b: Any) -> Any:
    if not (isinstance(a, str) and isinstance(b, str)):
        raise ExprError(f"expected binary arguments for <>: {inspect(a)} <> {inspect(b)}", "ArgumentError")
    if len(a) + len(b) > ctx.max_size:
        raise LimitError(f"string longer than {ctx.max_size} characters")
    return a + b


def op_lconcat(ctx: Budget, a: Any, b: Any) -> Any:
    if not isinstance(a, list) or not isinstance(b, list):
        raise ExprError(f"++ expects lists: {inspect(a)} ++ {inspect(b)}", "ArgumentError")
    return ctx.size(a + b)


def op_lsub(ctx: Budget, a: Any, b: Any) -> Any:
    if not isinstance(a, list) or not isinstance(b, list):
        raise ExprError(f"-- expects lists: {inspect(a)} -- {inspect(b)}", "ArgumentError")
    ctx.tick(len(a) + len(b))
    out = list(a)
    for x in b:
        compared = len(out)
        for i, y in enumerate(out):
            if term_eq(x, y, strict=True):
                del out[i]
                compared = i + 1
                break
        ctx.tick(compared)  # the comparisons made, so that big -- big cannot run for minutes
    return out


def op_range(ctx: Budget, a: Any, b: Any) -> list[int]:
    if not (isinstance(a, int) and isinstance(b, int)) or isinstance(a, bool) or isinstance(b, bool):
        raise ExprError("ranges (first..last) expect integers", "ArgumentError")
    if abs(b - a) + 1 > ctx.max_size:
        raise LimitError(f"range larger than {ctx.max_size} elements")
    return list(range(a, b + 1)) if a <= b else list(range(a, b - 1, -1))


def enumerable(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return [(k, value[k]) for k in sorted_terms(list(value))]
    raise ExprError(
        f"protocol Enumerable not implemented for {inspect(value)} of type {type_name(value)}",
        "Protocol.UndefinedError",
    )


def op_in(ctx: Budget, a: Any, b: Any) -> bool:
    items = enumerable(b)
    ctx.tick(len(items))
    return any(term_eq(a, x) for x in items)


def op_match_str(ctx: Budget, a: Any, b: Any) -> bool:
    if not isinstance(a, str) or not isinstance(b, str):
        raise ExprError("=~ expects strings", "ArgumentError")
    return b in a
