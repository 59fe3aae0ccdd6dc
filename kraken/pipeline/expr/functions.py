"""Function values (closures, captures, named builtins), how they are applied, and the
:class:`Budget` of steps, call depth and sizes that one evaluation may spend.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kraken.pipeline.expr.terms import ExprError, LimitError, inspect


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
