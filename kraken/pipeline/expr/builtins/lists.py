"""``List`` functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kraken.pipeline.expr.builtins.enumerables import e_reduce, e_zip
from kraken.pipeline.expr.functions import Budget, bad_arg
from kraken.pipeline.expr.operators import op_lsub
from kraken.pipeline.expr.terms import LimitError


def list_arg(name: str, x: Any) -> list[Any]:
    if not isinstance(x, list):
        raise bad_arg(f"List.{name} expects a list, got", x)
    return x


def l_flatten(ctx: Budget, x: Any) -> list[Any]:
    out: list[Any] = []

    def walk(items: list[Any], depth: int) -> None:
        if depth > ctx.max_depth:
            raise LimitError("list nested too deeply")
        ctx.tick(len(items))
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
            else:
                out.append(item)

    walk(list_arg("flatten/1", x), 0)
    return out


def l_duplicate(ctx: Budget, x: Any, n: Any) -> list[Any]:
    if not isinstance(n, int) or n < 0:
        raise bad_arg("List.duplicate/2 expects a non-negative integer, got", n)
    if n > ctx.max_size:
        raise LimitError(f"list longer than {ctx.max_size} elements")
    if n * (ctx.expanded(x) + 1) > ctx.max_bytes:
        raise LimitError(f"value expands to more than {ctx.max_bytes} bytes", "value_bytes")
    ctx.tick(n)
    return [x] * n


def l_insert_at(ctx: Budget, x: Any, i: Any, v: Any) -> list[Any]:
    out = list(list_arg("insert_at/3", x))
    if i < 0:
        i = len(out) + i + 1
    out.insert(i, v)
    return out


def l_delete_at(ctx: Budget, x: Any, i: Any) -> list[Any]:
    out = list(list_arg("delete_at/2", x))
    if -len(out) <= i < len(out):
        del out[i]
    return out


def l_replace_at(ctx: Budget, x: Any, i: Any, v: Any) -> list[Any]:
    out = list(list_arg("replace_at/3", x))
    if -len(out) <= i < len(out):
        out[i] = v
    return out


LIST: dict[str, Callable[..., Any]] = {
    "first": lambda ctx, x, d=None: list_arg("first/1", x)[0] if x else d,
    "last": lambda ctx, x, d=None: list_arg("last/1", x)[-1] if x else d,
    "flatten": l_flatten,
    "wrap": lambda ctx, x: [] if x is None else (x if isinstance(x, list) else [x]),
    "delete": lambda ctx, x, v: op_lsub(ctx, list_arg("delete/2", x), [v]),
    "delete_at": l_delete_at,
    "duplicate": l_duplicate,
    "insert_at": l_insert_at,
    "replace_at": l_replace_at,
    "zip": lambda ctx, x: e_zip(ctx, x),
    "to_tuple": lambda ctx, x: tuple(list_arg("to_tuple/1", x)),
    "foldl": lambda ctx, x, acc, f: e_reduce(ctx, list_arg("foldl/3", x), acc, f),
    "foldr": lambda ctx, x, acc, f: e_reduce(ctx, list(reversed(list_arg("foldr/3", x))), acc, f),
}
