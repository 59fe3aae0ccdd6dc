"""The functions expressions may call: Kernel, Access, Enum, List, Map, String.

Every builtin takes the evaluation budget ``ctx`` first. Results that could grow without
bound (strings, lists, integers) are checked against the budget's size limit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from kraken.pipeline.expr_terms import (
    Atom,
    ExprError,
    LimitError,
    inspect,
    is_atom,
    is_number,
    sort_key,
    sorted_terms,
    term_cmp,
    term_eq,
    to_string,
    truthy,
    type_name,
)

MAX_INT_BITS = 4096
_INTEGER = re.compile(r"[+-]?[0-9]+")


class Budget:
    """Evaluation bounds shared by one evaluation: steps, call depth, sizes."""

    __slots__ = ("depth", "max_depth", "max_size", "max_steps", "steps")

    def __init__(self, max_steps: int = 100_000, max_depth: int = 32, max_size: int = 1_000_000) -> None:
        self.steps = 0
        self.depth = 0
        self.max_steps = max_steps
        self.max_depth = max_depth
        self.max_size = max_size

    def tick(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > self.max_steps:
            raise LimitError(f"evaluation exceeded {self.max_steps} steps")

    def size(self, value: Any) -> Any:
        if len(value) > self.max_size:
            raise LimitError(f"value larger than {self.max_size} elements")
        return value


class Fn:
    """A function value: a closure, a capture or a named builtin."""

    arity: int = 0
    name: str = "fn"

    def __call__(self, ctx: Budget, args: list[Any]) -> Any:
        raise NotImplementedError


class NamedFn(Fn):
    def __init__(self, name: str, arity: int, func: Callable[..., Any], with_ctx: bool = True) -> None:
        self.name, self.arity, self.func, self.with_ctx = name, arity, func, with_ctx

    def __call__(self, ctx: Budget, args: list[Any]) -> Any:
        ctx.tick()
        if len(args) != self.arity:
            raise ExprError(f"{self.name}/{self.arity} called with {len(args)} arguments", "BadArityError")
        return self.func(ctx, *args) if self.with_ctx else self.func(*args)


def apply(ctx: Budget, f: Any, *args: Any) -> Any:
    if not isinstance(f, Fn):
        raise ExprError(f"expected a function, got: {inspect(f)}", "BadFunctionError")
    if f.arity != len(args):
        raise ExprError(f"function of arity {f.arity} called with {len(args)} arguments", "BadArityError")
    return f(ctx, list(args))


def bad_arg(what: str, value: Any) -> ExprError:
    return ExprError(f"{what}: {inspect(value)}", "ArgumentError")


# -- arithmetic and operators -----------------------------------------------------------------
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
        for i, y in enumerate(out):
            if term_eq(x, y, strict=True):
                del out[i]
                break
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


# -- Access -------------------------------------------------------------------------------------
class AccessFn:
    """``Access.all/at/key/filter/elem``: a path step for get_in/put_in/update_in."""

    def __init__(self, kind: str, arg: Any = None, default: Any = None) -> None:
        self.kind, self.arg, self.default = kind, arg, default

    def get(self, ctx: Budget, data: Any, nxt: Callable[[Any], Any]) -> Any:
        k = self.kind
        if k == "key":
            if data is None:
                return nxt(self.default)
            if not isinstance(data, dict):
                raise bad_arg("Access.key/2 expected a map, got", data)
            return nxt(data.get(self.arg, self.default))
        if k == "elem":
            if not isinstance(data, tuple):
                raise bad_arg("Access.elem/1 expected a tuple, got", data)
            return nxt(data[self.arg] if 0 <= self.arg < len(data) else None)
        if not isinstance(data, list):
            raise bad_arg(f"Access.{k}/{0 if k == 'all' else 1} expected a list, got", data)
        ctx.tick(len(data))
        if k == "all":
            return [nxt(v) for v in data]
        if k == "at":
            i = self.arg
            return nxt(data[i] if -len(data) <= i < len(data) else None)
        return [nxt(v) for v in data if truthy(apply(ctx, self.arg, v))]

    def update(self, ctx: Budget, data: Any, fun: Callable[[Any], Any]) -> Any:
        k = self.kind
        if k == "key":
            base = {} if data is None else data
            if not isinstance(base, dict):
                raise bad_arg("Access.key/2 expected a map, got", data)
            return {**base, self.arg: fun(base.get(self.arg, self.default))}
        if k == "elem":
            if not isinstance(data, tuple):
                raise bad_arg("Access.elem/1 expected a tuple, got", data)
            items = list(data)
            items[self.arg] = fun(items[self.arg])
            return tuple(items)
        if not isinstance(data, list):
            raise bad_arg(f"Access.{k} expected a list, got", data)
        ctx.tick(len(data))
        if k == "all":
            return [fun(v) for v in data]
        if k == "at":
            i = self.arg
            if not -len(data) <= i < len(data):
                return data
            out = list(data)
            out[i] = fun(out[i])
            return out
        return [fun(v) if truthy(apply(ctx, self.arg, v)) else v for v in data]


def access_get(data: Any, key: Any) -> Any:
    """``data[key]``: maps by key, keyword lists by atom, nil-safe."""
    if isinstance(data, dict):
        if isinstance(key, bool) or key is None:
            return data.get(key) if any(k is key for k in data) else None
        return data.get(key)
    if data is None:
        return None
    if isinstance(data, list):
        if not isinstance(key, Atom):
            raise ExprError(
                f"the Access calls for keywords expect an atom key, got: {inspect(key)}", "ArgumentError"
            )
        for item in data:
            if isinstance(item, tuple) and len(item) == 2 and item[0] == key:
                return item[1]
        return None
    raise ExprError(
        f"Access is not implemented for {inspect(data)} of type {type_name(data)}", "UndefinedFunctionError"
    )


def _path(keys: Any) -> list[Any]:
    if not isinstance(keys, list):
        raise bad_arg("the path must be a list, got", keys)
    return keys


def get_in(ctx: Budget, data: Any, keys: Any) -> Any:
    path = _path(keys)

    def walk(value: Any, i: int) -> Any:
        if i == len(path):
            return value
        ctx.tick()
        step = path[i]
        if isinstance(step, AccessFn):
            return step.get(ctx, value, lambda v: walk(v, i + 1))
        return walk(access_get(value, step), i + 1)

    return walk(data, 0)


def update_in(ctx: Budget, data: Any, keys: Any, fun: Any) -> Any:
    path = _path(keys)
    if not path:
        raise bad_arg("update_in/put_in need a non-empty path, got", keys)

    def walk(value: Any, i: int) -> Any:
        ctx.tick()
        step = path[i]
        if i == len(path) - 1:
            inner = (lambda v: apply(ctx, fun, v)) if isinstance(fun, Fn) else fun
        else:

            def inner(v: Any) -> Any:
                return walk(v, i + 1)

        if isinstance(step, AccessFn):
            return step.update(ctx, value, inner)
        if value is None:
            raise ExprError(f"could not put/update key {inspect(step)} on a nil value", "ArgumentError")
        if not isinstance(value, dict):
            raise bad_arg("put_in/update_in expected a map, got", value)
        return {**value, step: inner(value.get(step))}

    return walk(data, 0)


def put_in(ctx: Budget, data: Any, keys: Any, value: Any) -> Any:
    return update_in(ctx, data, keys, lambda _: value)


def pop_in(ctx: Budget, data: Any, keys: Any) -> tuple[Any, Any]:
    path = _path(keys)
    if not path or any(isinstance(k, AccessFn) for k in path):
        raise bad_arg("pop_in/2 supports map keys only, got", keys)
    if data is None:
        return (None, None)
    if len(path) == 1:
        if not isinstance(data, dict):
            raise bad_arg("pop_in/2 expected a map, got", data)
        rest = dict(data)
        return (rest.pop(path[0], None), rest)
    inner = access_get(data, path[0])
    if inner is None:
        return (None, data)
    popped, new_inner = pop_in(ctx, inner, path[1:])
    return (popped, {**data, path[0]: new_inner})


# -- Kernel -------------------------------------------------------------------------------------
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


def _is(pred: Callable[[Any], bool]) -> Callable[..., bool]:
    return lambda ctx, x: pred(x)


def k_max(ctx: Budget, a: Any, b: Any) -> Any:
    return a if term_cmp(a, b) >= 0 else b


def k_min(ctx: Budget, a: Any, b: Any) -> Any:
    return a if term_cmp(a, b) <= 0 else b


def k_size(kind: type, name: str) -> Callable[..., int]:
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
    "inspect": lambda ctx, x: inspect(x),
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
    "to_string": lambda ctx, x: to_string(x),
    "trunc": _rounding("trunc", math.trunc),
    "tuple_size": k_size(tuple, "tuple_size/1"),
    "update_in": update_in,
}


# -- Enum ---------------------------------------------------------------------------------------
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


def e_join(ctx: Budget, e: Any, sep: Any = "") -> str:
    if not isinstance(sep, str):
        raise bad_arg("Enum.join/2 expects a string separator, got", sep)
    return ctx.size(sep.join(to_string(x) for x in _items(ctx, e)))


def e_map_join(ctx: Budget, e: Any, sep: Any, f: Any = None) -> str:
    if f is None:
        sep, f = "", sep
    g = _fn1(ctx, f)
    return ctx.size(sep.join(to_string(g(x)) for x in _items(ctx, e)))


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


def e_uniq_by(ctx: Budget, e: Any, f: Any = None) -> list[Any]:
    g = _fn1(ctx, f) if f is not None else (lambda x: x)
    seen: list[Any] = []
    out = []
    for x in _items(ctx, e):
        k = g(x)
        if not any(term_eq(k, s, strict=True) for s in seen):
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
        out.setdefault(_hashable(g(x)), []).append(x)
    return out


def e_frequencies(ctx: Budget, e: Any) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for x in _items(ctx, e):
        k = _hashable(x)
        out[k] = out.get(k, 0) + 1
    return out


def _hashable(k: Any) -> Any:
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
            out[_hashable(x[0])] = x[1]
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


# -- List ---------------------------------------------------------------------------------------
def _list(name: str, x: Any) -> list[Any]:
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

    walk(_list("flatten/1", x), 0)
    return out


def l_duplicate(ctx: Budget, x: Any, n: Any) -> list[Any]:
    if not isinstance(n, int) or n < 0:
        raise bad_arg("List.duplicate/2 expects a non-negative integer, got", n)
    if n > ctx.max_size:
        raise LimitError(f"list longer than {ctx.max_size} elements")
    ctx.tick(n)
    return [x] * n


def l_insert_at(ctx: Budget, x: Any, i: Any, v: Any) -> list[Any]:
    out = list(_list("insert_at/3", x))
    if i < 0:
        i = len(out) + i + 1
    out.insert(i, v)
    return out


def l_delete_at(ctx: Budget, x: Any, i: Any) -> list[Any]:
    out = list(_list("delete_at/2", x))
    if -len(out) <= i < len(out):
        del out[i]
    return out


def l_replace_at(ctx: Budget, x: Any, i: Any, v: Any) -> list[Any]:
    out = list(_list("replace_at/3", x))
    if -len(out) <= i < len(out):
        out[i] = v
    return out


LIST: dict[str, Callable[..., Any]] = {
    "first": lambda ctx, x, d=None: _list("first/1", x)[0] if x else d,
    "last": lambda ctx, x, d=None: _list("last/1", x)[-1] if x else d,
    "flatten": l_flatten,
    "wrap": lambda ctx, x: [] if x is None else (x if isinstance(x, list) else [x]),
    "delete": lambda ctx, x, v: op_lsub(ctx, _list("delete/2", x), [v]),
    "delete_at": l_delete_at,
    "duplicate": l_duplicate,
    "insert_at": l_insert_at,
    "replace_at": l_replace_at,
    "zip": lambda ctx, x: e_zip(ctx, x),
    "to_tuple": lambda ctx, x: tuple(_list("to_tuple/1", x)),
    "foldl": lambda ctx, x, acc, f: e_reduce(ctx, _list("foldl/3", x), acc, f),
    "foldr": lambda ctx, x, acc, f: e_reduce(ctx, list(reversed(_list("foldr/3", x))), acc, f),
}


# -- Map ----------------------------------------------------------------------------------------
def _map(name: str, m: Any) -> dict[Any, Any]:
    if not isinstance(m, dict):
        raise ExprError(f"expected a map, got: {inspect(m)} (in Map.{name})", "BadMapError")
    return m


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
    "put": lambda ctx, m, k, v: {**_map("put/3", m), _hashable(k): v},
    "put_new": lambda ctx, m, k, v: m if k in _map("put_new/3", m) else {**m, _hashable(k): v},
    "keys": lambda ctx, m: sorted_terms(list(_map("keys/1", m))),
    "values": lambda ctx, m: [m[k] for k in sorted_terms(list(_map("values/1", m)))],
    "has_key?": lambda ctx, m, k: k in _map("has_key?/2", m),
    "delete": lambda ctx, m, k: {kk: v for kk, v in _map("delete/2", m).items() if kk != k},
    "drop": lambda ctx, m, ks: {kk: v for kk, v in _map("drop/2", m).items() if kk not in _list("drop", ks)},
    "take": lambda ctx, m, ks: {kk: v for kk, v in _map("take/2", m).items() if kk in _list("take", ks)},
    "merge": m_merge,
    "new": m_new,
    "to_list": lambda ctx, m: enumerable(_map("to_list/1", m)),
    "fetch": m_fetch,
    "fetch!": m_fetch_bang,
    "update": m_update,
    "pop": lambda ctx, m, k, d=None: (_map("pop/3", m).get(k, d), {kk: v for kk, v in m.items() if kk != k}),
    "filter": lambda ctx, m, f: dict(x for x in enumerable(_map("filter/2", m)) if truthy(apply(ctx, f, x))),
    "equal?": lambda ctx, a, b: term_eq(_map("equal?/2", a), _map("equal?/2", b), strict=True),
}


# -- String -------------------------------------------------------------------------------------
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
    "graphemes": lambda ctx, s: list(_str("graphemes", s)),
    "codepoints": lambda ctx, s: list(_str("codepoints", s)),
    "equivalent?": lambda ctx, a, b: _str("equivalent?", a) == _str("equivalent?", b),
}


ACCESS: dict[str, Callable[..., Any]] = {
    "all": lambda ctx: AccessFn("all"),
    "at": lambda ctx, i: (
        AccessFn("at", i)
        if isinstance(i, int) and not isinstance(i, bool)
        else (_ for _ in ()).throw(bad_arg("Access.at/1 expects an integer, got", i))
    ),
    "key": lambda ctx, k, d=None: AccessFn("key", k, d),
    "filter": lambda ctx, f: AccessFn("filter", f),
    "elem": lambda ctx, i: AccessFn("elem", i),
    "get": lambda ctx, data, k, d=None: d if (v := access_get(data, k)) is None else v,
}

MODULES: dict[str, dict[str, Callable[..., Any]]] = {
    "Access": ACCESS,
    "Enum": ENUM,
    "List": LIST,
    "Map": MAP,
    "String": STRING,
    "Kernel": KERNEL,
}
