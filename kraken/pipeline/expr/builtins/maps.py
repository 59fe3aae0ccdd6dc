"""``Map`` functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kraken.pipeline.expr.builtins.enumerables import e_into, hashable_key
from kraken.pipeline.expr.builtins.lists import list_arg
from kraken.pipeline.expr.functions import Budget, apply
from kraken.pipeline.expr.operators import enumerable
from kraken.pipeline.expr.terms import Atom, ExprError, inspect, sorted_terms, term_eq, truthy


def _map(name: str, m: Any) -> dict[Any, Any]:
    if not isinstance(m, dict):
        raise ExprError(f"expected a map, got: {inspect(m)} (in Map.{name})", "BadMapError")
    return m


def _entries(ctx: Budget, name: str, m: Any) -> dict[Any, Any]:
    """A map whose entries are all visited (sorted): a step per entry."""
    m = _map(name, m)
    ctx.tick(len(m))
    return m


def m_select(ctx: Budget, name: str, m: Any, ks: Any, keep: bool) -> dict[Any, Any]:
    """``Map.take`` (*keep*) or ``Map.drop``: the keys are looked up in a set where they hash."""
    m = _entries(ctx, name, m)
    keys: Any = list_arg(name, ks)
    try:
        keys = set(keys)
    except TypeError:
        ctx.tick(len(keys) * len(m))
    return {k: v for k, v in m.items() if (k in keys) == keep}


def m_new(ctx: Budget, e: Any = None) -> dict[Any, Any]:
    return {} if e is None else e_into(ctx, e, {})


def m_update(ctx: Budget, m: Any, k: Any, default: Any, f: Any) -> dict[Any, Any]:
    m = _map("update/4", m)
    return {**m, k: apply(ctx, f, m[k]) if k in m else default}


def m_merge(ctx: Budget, a: Any, b: Any) -> dict[Any, Any]:
    return {**_map("merge/2", a), **_map("merge/2", b)}


def m_fetch(ctx: Budget, m: Any, k: Any) -> Any:
    m = _map("fetch/2", m)
    return (Atom("ok"), m[k]) if k in m else Atom("error")


def m_fetch_bang(ctx: Budget, m: Any, k: Any) -> Any:
    m = _map("fetch!/2", m)
    if k not in m:
        raise ExprError(f"key {inspect(k)} not found in: {inspect(m)}", "KeyError")
    return m[k]


MAP: dict[str, Callable[..., Any]] = {
    "get": lambda ctx, m, k, d=None: _map("get/3", m).get(k, d),
    "put": lambda ctx, m, k, v: {**_map("put/3", m), hashable_key(k): v},
    "put_new": lambda ctx, m, k, v: m if k in _map("put_new/3", m) else {**m, hashable_key(k): v},
    "keys": lambda ctx, m: sorted_terms(list(_entries(ctx, "keys/1", m))),
    "values": lambda ctx, m: [m[k] for k in sorted_terms(list(_entries(ctx, "values/1", m)))],
    "has_key?": lambda ctx, m, k: k in _map("has_key?/2", m),
    "delete": lambda ctx, m, k: {kk: v for kk, v in _map("delete/2", m).items() if kk != k},
    "drop": lambda ctx, m, ks: m_select(ctx, "drop/2", m, ks, False),
    "take": lambda ctx, m, ks: m_select(ctx, "take/2", m, ks, True),
    "merge": m_merge,
    "new": m_new,
    "to_list": lambda ctx, m: enumerable(_entries(ctx, "to_list/1", m)),
    "fetch": m_fetch,
    "fetch!": m_fetch_bang,
    "update": m_update,
    "pop": lambda ctx, m, k, d=None: (_map("pop/3", m).get(k, d), {kk: v for kk, v in m.items() if kk != k}),
    "filter": lambda ctx, m, f: dict(x for x in enumerable(_map("filter/2", m)) if truthy(apply(ctx, f, x))),
    "equal?": lambda ctx, a, b: term_eq(_map("equal?/2", a), _map("equal?/2", b), strict=True),
}
