"""``Kernel`` functions expressions call unqualified (``length``, ``div``, ``is_map`` ...)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sized
from typing import Any

from kraken.pipeline.expr.builtins.access import get_in, pop_in, put_in, update_in
from kraken.pipeline.expr.functions import Budget, Fn, bad_arg
from kraken.pipeline.expr.terms import ExprError, LimitError, inspect, is_atom, is_number, term_cmp, to_string


def _int_op(name: str, a: Any, b: Any) -> None:
    if not (isinstance(a, int) and isinstance(b, int)) or isinstance(a, bool) or isinstance(b, bool):
        raise ExprError(
            f"bad argument in arithmetic expression: {name}({inspect(a)}, {inspect(b)})", "ArithmeticError"
        )
    if b == 0:
        raise ExprError(f"bad argument in arithmetic expression: {name}({a}, 0)", "ArithmeticError")


def k_div(ctx: Budget, a: Any, b: Any) -> int:
    _int_op("div", a, b)
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def k_rem(ctx: Budget, a: Any, b: Any) -> int:
    _int_op("rem", a, b)
    return a - b * k_div(ctx, a, b)


def _need_num(name: str, x: Any) -> None:
    if not is_number(x):
        raise ExprError(f"bad argument in arithmetic expression: {name}({inspect(x)})", "ArithmeticError")


def k_round(ctx: Budget, x: Any) -> int:
    _need_num("round", x)
    return math.floor(abs(x) + 0.5) * (1 if x >= 0 else -1) if isinstance(x, float) else x


def k_length(ctx: Budget, x: Any) -> int:
    if not isinstance(x, list):
        raise bad_arg("errors were found at the given arguments: length/1 expects a list, got", x)
    return len(x)


def k_hd(ctx: Budget, x: Any) -> Any:
    if not isinstance(x, list) or not x:
        raise bad_arg("hd/1 expects a non-empty list, got", x)
    return x[0]


def k_tl(ctx: Budget, x: Any) -> Any:
    if not isinstance(x, list) or not x:
        raise bad_arg("tl/1 expects a non-empty list, got", x)
    return x[1:]


def k_elem(ctx: Budget, t: Any, i: Any) -> Any:
    if not isinstance(t, tuple) or not isinstance(i, int) or not 0 <= i < len(t):
        raise bad_arg("elem/2 expects a tuple and an index in range, got", (t, i))
    return t[i]


def k_put_elem(ctx: Budget, t: Any, i: Any, v: Any) -> Any:
    if not isinstance(t, tuple) or not isinstance(i, int) or not 0 <= i < len(t):
        raise bad_arg("put_elem/3 expects a tuple and an index in range, got", (t, i))
    return (*t[:i], v, *t[i + 1 :])


def k_inspect(ctx: Budget, x: Any) -> str:
    _expands(ctx, x, "inspect/1")
    return inspect(x)


def k_to_string(ctx: Budget, x: Any) -> str:
    _expands(ctx, x, "to_string/1")
    return to_string(x)


def _expands(ctx: Budget, x: Any, name: str) -> None:
    if ctx.expanded(x) > ctx.max_bytes:
        raise LimitError(f"{name} of a value that expands to more than {ctx.max_bytes} bytes")


def _is(pred: Callable[[Any], bool]) -> Callable[..., bool]:
    return lambda ctx, x: pred(x)


def k_max(ctx: Budget, a: Any, b: Any) -> Any:
    return a if term_cmp(a, b) >= 0 else b


def k_min(ctx: Budget, a: Any, b: Any) -> Any:
    return a if term_cmp(a, b) <= 0 else b


def k_size(kind: type[Sized], name: str) -> Callable[..., int]:
    def size(ctx: Budget, x: Any) -> int:
        if not isinstance(x, kind):
            raise bad_arg(f"{name} expects a {kind.__name__}, got", x)
        return len(x)

    return size


def k_byte_size(ctx: Budget, x: Any) -> int:
    if not isinstance(x, str):
        raise bad_arg("byte_size/1 expects a binary, got", x)
    return len(x.encode("utf-8"))


def k_is_map_key(ctx: Budget, m: Any, k: Any) -> bool:
    if not isinstance(m, dict):
        raise bad_arg("is_map_key/2 expects a map, got", m)
    return k in m


def _rounding(name: str, fn: Callable[[float], int]) -> Callable[..., int]:
    def f(ctx: Budget, x: Any) -> int:
        _need_num(name, x)
        return fn(x)

    return f


def k_abs(ctx: Budget, x: Any) -> Any:
    _need_num("abs", x)
    return abs(x)


KERNEL: dict[str, Callable[..., Any]] = {
    "abs": k_abs,
    "byte_size": k_byte_size,
    "ceil": _rounding("ceil", math.ceil),
    "div": k_div,
    "elem": k_elem,
    "floor": _rounding("floor", math.floor),
    "get_in": get_in,
    "hd": k_hd,
    "inspect": k_inspect,
    "is_atom": _is(is_atom),
    "is_binary": _is(lambda x: isinstance(x, str)),
    "is_bitstring": _is(lambda x: isinstance(x, str)),
    "is_boolean": _is(lambda x: isinstance(x, bool)),
    "is_float": _is(lambda x: isinstance(x, float)),
    "is_function": _is(lambda x: isinstance(x, Fn)),
    "is_integer": _is(lambda x: isinstance(x, int) and not isinstance(x, bool)),
    "is_list": _is(lambda x: isinstance(x, list)),
    "is_map": _is(lambda x: isinstance(x, dict)),
    "is_map_key": k_is_map_key,
    "is_nil": _is(lambda x: x is None),
    "is_number": _is(is_number),
    "is_pid": _is(lambda x: False),
    "is_port": _is(lambda x: False),
    "is_reference": _is(lambda x: False),
    "is_tuple": _is(lambda x: isinstance(x, tuple)),
    "length": k_length,
    "map_size": k_size(dict, "map_size/1"),
    "max": k_max,
    "min": k_min,
    "pop_in": pop_in,
    "put_elem": k_put_elem,
    "put_in": put_in,
    "rem": k_rem,
    "round": k_round,
    "tl": k_tl,
    "to_string": k_to_string,
    "trunc": _rounding("trunc", math.trunc),
    "tuple_size": k_size(tuple, "tuple_size/1"),
    "update_in": update_in,
}
