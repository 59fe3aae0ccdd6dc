"""``Enum``: functions over lists and maps (a map enumerates as sorted ``{key, value}`` tuples)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kraken.pipeline.expr.functions import Budget, Fn, apply, bad_arg
from kraken.pipeline.expr.operators import enumerable, op_add, op_in, op_mul
from kraken.pipeline.expr.terms import (
    Atom,
    ExprError,
    LimitError,
    sort_key,
    sorted_terms,
    term_eq,
    to_string,
    truthy,
)


def _items(ctx: Budget, e: Any) -> list[Any]:
    items = enumerable(e)
    ctx.tick(len(items))
    return items


def _fn1(ctx: Budget, f: Any) -> Callable[[Any], Any]:
    if not isinstance(f, Fn):
        raise bad_arg("expected a function, got", f)
    return lambda x: apply(ctx, f, x)


def _empty(name: str) -> ExprError:
    return ExprError(f"empty error in {name}", "Enum.EmptyError")


def e_at(ctx: Budget, e: Any, i: Any, default: Any = None) -> Any:
    items = _items(ctx, e)
    if not isinstance(i, int):
        raise bad_arg("Enum.at/2 expects an integer index, got", i)
    return items[i] if -len(items) <= i < len(items) else default


def e_reduce(ctx: Budget, e: Any, *rest: Any) -> Any:
    items = _items(ctx, e)
    if len(rest) == 1:
        if not items:
            raise _empty("Enum.reduce/2")
        acc, f, items = items[0], rest[0], items[1:]
    else:
        acc, f = rest
    for x in items:
        acc = apply(ctx, f, x, acc)
    return acc


def e_sort(ctx: Budget, e: Any, how: Any = None) -> list[Any]:
    items = _items(ctx, e)
    if how is None or how == Atom("asc"):
        return sorted_terms(items)
    if how == Atom("desc"):
        return sorted(items, key=sort_key, reverse=True)
    out: list[Any] = []
    for x in items:  # insertion sort keeps the user's comparator semantics
        i = len(out)
        while i > 0 and not truthy(apply(ctx, how, out[i - 1], x)):
            i -= 1
        out.insert(i, x)
    return out


def e_sort_by(ctx: Budget, e: Any, f: Any, how: Any = None) -> list[Any]:
    g = _fn1(ctx, f)
    keyed = [(sort_key(g(x)), x) for x in _items(ctx, e)]
    keyed.sort(key=lambda p: p[0], reverse=how == Atom("desc"))
    return [x for _, x in keyed]


def e_min(ctx: Budget, e: Any) -> Any:
    items = _items(ctx, e)
    if not items:
        raise _empty("Enum.min/1")
    return min(items, key=sort_key)


def e_max(ctx: Budget, e: Any) -> Any:
    items = _items(ctx, e)
    if not items:
        raise _empty("Enum.max/1")
    return max(items, key=sort_key)


def e_min_by(ctx: Budget, e: Any, f: Any) -> Any:
    items, g = _items(ctx, e), _fn1(ctx, f)
    if not items:
        raise _empty("Enum.min_by/2")
    return min(items, key=lambda x: sort_key(g(x)))


def e_max_by(ctx: Budget, e: Any, f: Any) -> Any:
    items, g = _items(ctx, e), _fn1(ctx, f)
    if not items:
        raise _empty("Enum.max_by/2")
    return max(items, key=lambda x: sort_key(g(x)))


def e_sum(ctx: Budget, e: Any) -> Any:
    total: Any = 0
    for x in _items(ctx, e):
        total = op_add(ctx, total, x)
    return total


def _joined(ctx: Budget, parts: list[str], sep: str) -> str:
    """``sep.join(parts)``, refused before it is built when it would be over the size bound."""
    length = sum(map(len, parts)) + len(sep) * max(len(parts) - 1, 0)
    if length > ctx.max_size:
        raise LimitError(f"string longer than {ctx.max_size} characters")
    return sep.join(parts)


def e_join(ctx: Budget, e: Any, sep: Any = "") -> str:
    if not isinstance(sep, str):
        raise bad_arg("Enum.join/2 expects a string separator, got", sep)
    return _joined(ctx, [to_string(x) for x in _items(ctx, e)], sep)


def e_map_join(ctx: Budget, e: Any, sep: Any, f: Any = None) -> str:
    if f is None:
        sep, f = "", sep
    if not isinstance(sep, str):
        raise bad_arg("Enum.map_join/3 expects a string separator, got", sep)
    g = _fn1(ctx, f)
    return _joined(ctx, [to_string(g(x)) for x in _items(ctx, e)], sep)


def e_find(ctx: Budget, e: Any, *rest: Any) -> Any:
    default, f = (None, rest[0]) if len(rest) == 1 else rest
    g = _fn1(ctx, f)
    for x in _items(ctx, e):
        if truthy(g(x)):
            return x
    return default


def e_find_index(ctx: Budget, e: Any, f: Any) -> Any:
    g = _fn1(ctx, f)
    for i, x in enumerate(_items(ctx, e)):
        if truthy(g(x)):
            return i
    return None


def e_count(ctx: Budget, e: Any, f: Any = None) -> int:
    items = _items(ctx, e)
    if f is None:
        return len(items)
    g = _fn1(ctx, f)
    return sum(1 for x in items if truthy(g(x)))


_SCALARS = (str, int, float, bool, type(None), Atom)


def e_uniq_by(ctx: Budget, e: Any, f: Any = None) -> list[Any]:
    """Keys are compared with ``===``: scalars by a hash of (type, value), others one by one
    (and those comparisons are counted as steps)."""
    g = _fn1(ctx, f) if f is not None else (lambda x: x)
    hashed: set[tuple[type, Any]] = set()
    seen: list[Any] = []
    out = []
    for x in _items(ctx, e):
        k = g(x)
        if type(k) in _SCALARS:
            key = (type(k), k)
            if key in hashed:
                continue
            hashed.add(key)
        else:
            ctx.tick(len(seen))
            if any(term_eq(k, s, strict=True) for s in seen):
                continue
            seen.append(k)
        out.append(x)
    return out


def e_dedup(ctx: Budget, e: Any) -> list[Any]:
    out: list[Any] = []
    for x in _items(ctx, e):
        if not out or not term_eq(out[-1], x, strict=True):
            out.append(x)
    return out


def e_group_by(ctx: Budget, e: Any, f: Any) -> dict[Any, Any]:
    g = _fn1(ctx, f)
    out: dict[Any, list[Any]] = {}
    for x in _items(ctx, e):
        out.setdefault(hashable_key(g(x)), []).append(x)
    return out


def e_frequencies(ctx: Budget, e: Any) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for x in _items(ctx, e):
        k = hashable_key(x)
        out[k] = out.get(k, 0) + 1
    return out


def hashable_key(k: Any) -> Any:
    try:
        hash(k)
    except TypeError:
        raise bad_arg("only strings, numbers, atoms and tuples can be map keys here, got", k) from None
    return k


def e_into(ctx: Budget, e: Any, target: Any) -> Any:
    items = _items(ctx, e)
    if isinstance(target, dict):
        out = dict(target)
        for x in items:
            if not isinstance(x, tuple) or len(x) != 2:
                raise bad_arg("Enum.into/2 with a map expects {key, value} tuples, got", x)
            out[hashable_key(x[0])] = x[1]
        return out
    if isinstance(target, list):
        return ctx.size(target + items)
    raise bad_arg("Enum.into/2 expects a map or a list, got", target)


def e_concat(ctx: Budget, a: Any, b: Any = None) -> list[Any]:
    if b is None:
        out: list[Any] = []
        for x in _items(ctx, a):
            out.extend(_items(ctx, x))
            ctx.size(out)
        return out
    return ctx.size(_items(ctx, a) + _items(ctx, b))


def e_flat_map(ctx: Budget, e: Any, f: Any) -> list[Any]:
    g = _fn1(ctx, f)
    out: list[Any] = []
    for x in _items(ctx, e):
        out.extend(_items(ctx, g(x)))
        ctx.size(out)
    return out


def e_chunk_every(ctx: Budget, e: Any, n: Any) -> list[Any]:
    if not isinstance(n, int) or n < 1:
        raise bad_arg("Enum.chunk_every/2 expects a positive integer, got", n)
    items = _items(ctx, e)
    return [items[i : i + n] for i in range(0, len(items), n)]


def e_slice(ctx: Budget, e: Any, start: Any, amount: Any) -> list[Any]:
    items = _items(ctx, e)
    if not isinstance(start, int) or not isinstance(amount, int) or amount < 0:
        raise bad_arg("Enum.slice/3 expects integers, got", (start, amount))
    if start < 0:
        start += len(items)
    return items[max(start, 0) : max(start, 0) + amount]


def e_take(ctx: Budget, e: Any, n: Any) -> list[Any]:
    items = _items(ctx, e)
    if not isinstance(n, int):
        raise bad_arg("Enum.take/2 expects an integer, got", n)
    return items[:n] if n >= 0 else items[n:]


def e_drop(ctx: Budget, e: Any, n: Any) -> list[Any]:
    items = _items(ctx, e)
    if not isinstance(n, int):
        raise bad_arg("Enum.drop/2 expects an integer, got", n)
    return items[n:] if n >= 0 else items[:n]


def e_split(ctx: Budget, e: Any, n: Any) -> tuple[list[Any], list[Any]]:
    items = _items(ctx, e)
    if not isinstance(n, int):
        raise bad_arg("Enum.split/2 expects an integer, got", n)
    return (items[:n], items[n:])


def e_take_while(ctx: Budget, e: Any, f: Any) -> list[Any]:
    g, out = _fn1(ctx, f), []
    for x in _items(ctx, e):
        if not truthy(g(x)):
            break
        out.append(x)
    return out


def e_drop_while(ctx: Budget, e: Any, f: Any) -> list[Any]:
    g, items = _fn1(ctx, f), _items(ctx, e)
    i = 0
    while i < len(items) and truthy(g(items[i])):
        i += 1
    return items[i:]


def e_zip(ctx: Budget, a: Any, b: Any = None) -> list[tuple[Any, ...]]:
    if b is None:
        lists = [_items(ctx, x) for x in _items(ctx, a)]
        return [tuple(t) for t in zip(*lists)]
    return list(zip(_items(ctx, a), _items(ctx, b)))


def e_unzip(ctx: Budget, e: Any) -> tuple[list[Any], list[Any]]:
    items = _items(ctx, e)
    return ([t[0] for t in items], [t[1] for t in items])


def e_product(ctx: Budget, e: Any) -> Any:
    total: Any = 1
    for x in _items(ctx, e):
        total = op_mul(ctx, total, x)
    return total


def e_fetch(ctx: Budget, e: Any, i: Any) -> Any:
    items = _items(ctx, e)
    if isinstance(i, int) and -len(items) <= i < len(items):
        return (Atom("ok"), items[i])
    return Atom("error")


ENUM: dict[str, Callable[..., Any]] = {
    "all?": lambda ctx, e, f=None: all(truthy(_fn1(ctx, f)(x) if f else x) for x in _items(ctx, e)),
    "any?": lambda ctx, e, f=None: any(truthy(_fn1(ctx, f)(x) if f else x) for x in _items(ctx, e)),
    "at": e_at,
    "chunk_every": e_chunk_every,
    "concat": e_concat,
    "count": e_count,
    "dedup": e_dedup,
    "drop": e_drop,
    "drop_while": e_drop_while,
    "each": lambda ctx, e, f: ([_fn1(ctx, f)(x) for x in _items(ctx, e)], Atom("ok"))[1],
    "empty?": lambda ctx, e: not _items(ctx, e),
    "fetch": e_fetch,
    "filter": lambda ctx, e, f: [x for x in _items(ctx, e) if truthy(_fn1(ctx, f)(x))],
    "find": e_find,
    "find_index": e_find_index,
    "find_value": lambda ctx, e, f: next((v for v in map(_fn1(ctx, f), _items(ctx, e)) if truthy(v)), None),
    "flat_map": e_flat_map,
    "frequencies": e_frequencies,
    "group_by": e_group_by,
    "into": e_into,
    "join": e_join,
    "map": lambda ctx, e, f: [_fn1(ctx, f)(x) for x in _items(ctx, e)],
    "map_join": e_map_join,
    "max": e_max,
    "max_by": e_max_by,
    "member?": lambda ctx, e, x: op_in(ctx, x, e),
    "min": e_min,
    "min_by": e_min_by,
    "product": e_product,
    "reduce": e_reduce,
    "reject": lambda ctx, e, f: [x for x in _items(ctx, e) if not truthy(_fn1(ctx, f)(x))],
    "reverse": lambda ctx, e: list(reversed(_items(ctx, e))),
    "slice": e_slice,
    "sort": e_sort,
    "sort_by": e_sort_by,
    "split": e_split,
    "sum": e_sum,
    "take": e_take,
    "take_while": e_take_while,
    "to_list": lambda ctx, e: list(_items(ctx, e)),
    "uniq": lambda ctx, e: e_uniq_by(ctx, e),
    "uniq_by": e_uniq_by,
    "unzip": e_unzip,
    "with_index": lambda ctx, e, offset=0: [(x, i + offset) for i, x in enumerate(_items(ctx, e))],
    "zip": e_zip,
}
