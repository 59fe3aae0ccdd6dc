"""``Access`` and the path functions built on it (``get_in``, ``put_in``, ``update_in``, ``pop_in``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kraken.pipeline.expr.functions import Budget, Fn, apply, bad_arg
from kraken.pipeline.expr.terms import Atom, ExprError, inspect, truthy, type_name


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
