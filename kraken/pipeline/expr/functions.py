"""Function values (closures, captures, named builtins), how they are applied, and the
:class:`Budget` of steps, call depth and sizes that one evaluation may spend.

Sizes are bounded twice: a string, list or range holds at most ``max_size`` elements, and
every value an evaluation builds expands to at most ``max_bytes`` characters and nests at
most ``max_nesting`` levels (see :mod:`kraken.pipeline.expr.sizes`). The byte bound is the
server's ``pipeline.max_value_bytes``, set once at start-up with :func:`set_value_limits`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kraken.pipeline.expr.sizes import PLAIN, SizedDict, flat_size, flat_size_map, measure, sized
from kraken.pipeline.expr.terms import ExprError, LimitError, inspect

MAX_VALUE_BYTES = 16 * 1024 * 1024
MAX_NESTING = 100
ALLOCATION_FACTOR = 8  # an evaluation may build this many times max_bytes in all


class ValueLimits:
    """The byte and nesting bounds of every evaluation, and of mapping outputs and events."""

    max_bytes = MAX_VALUE_BYTES
    max_nesting = MAX_NESTING


def set_value_limits(max_bytes: int = MAX_VALUE_BYTES, max_nesting: int = MAX_NESTING) -> None:
    """The server's configured bounds (``pipeline.max_value_bytes``, ``pipeline.max_value_nesting``)."""
    ValueLimits.max_bytes = max_bytes
    ValueLimits.max_nesting = max_nesting


def check_value(value: Any, what: str = "value") -> tuple[int, int]:
    """``(expanded size, depth)`` of *value*, or :class:`LimitError` when over the bounds."""
    if type(value) is dict:  # the common case, a map of scalars, in one pass
        flat = flat_size_map(value)
        if flat is not None and flat[0] <= ValueLimits.max_bytes and flat[1] <= ValueLimits.max_nesting:
            return flat
    try:
        size, depth = measure(value, ValueLimits.max_bytes)
    except ValueError as e:
        raise LimitError(f"{what}: {e}") from None
    if size > ValueLimits.max_bytes:
        raise LimitError(f"{what} expands to more than {ValueLimits.max_bytes} bytes", "value_bytes")
    if depth > ValueLimits.max_nesting:
        raise LimitError(f"{what} nests deeper than {ValueLimits.max_nesting} levels", "value_nesting")
    return size, depth


class Budget:
    """Evaluation bounds shared by one evaluation: steps, call depth, sizes."""

    __slots__ = (
        "allocated",
        "depth",
        "known",
        "max_allocated",
        "max_bytes",
        "max_depth",
        "max_nesting",
        "max_size",
        "max_steps",
        "steps",
    )

    def __init__(
        self,
        max_steps: int = 100_000,
        max_depth: int = 32,
        max_size: int = 1_000_000,
        max_bytes: int | None = None,
        max_nesting: int | None = None,
    ) -> None:
        self.steps = 0
        self.depth = 0
        self.max_steps = max_steps
        self.max_depth = max_depth
        self.max_size = max_size
        self.max_bytes = ValueLimits.max_bytes if max_bytes is None else max_bytes
        self.max_nesting = ValueLimits.max_nesting if max_nesting is None else max_nesting
        self.known: dict[int, tuple[Any, int, int]] = {}
        self.allocated = 0
        self.max_allocated = ALLOCATION_FACTOR * self.max_bytes

    def built(self, value: Any) -> Any:
        """Check a value an operation returned against the byte and nesting bounds; a new
        plain container comes back as its sized twin, so the next check of it costs nothing."""
        kind = type(value)
        if kind not in PLAIN:
            if kind is str:
                if len(value) > self.max_bytes:
                    raise LimitError(f"value expands to more than {self.max_bytes} bytes", "value_bytes")
                self._allocate(len(value))
            return value
        seen = self.known.get(id(value))
        if seen is not None:
            _, size, depth = seen
        else:
            fast = flat_size_map(value) if kind is dict else flat_size(value)
            if fast is not None:
                size, depth = fast
            else:
                try:
                    size, depth = measure(value, self.max_bytes, self.known)
                except ValueError as e:
                    raise LimitError(str(e)) from None
        if size > self.max_bytes:
            raise LimitError(f"value expands to more than {self.max_bytes} bytes", "value_bytes")
        if depth > self.max_nesting:
            raise LimitError(f"value nests deeper than {self.max_nesting} levels", "value_nesting")
        if seen is not None:
            return value
        self._allocate(size)
        return sized(value, size, depth)

    def seal(self, value: Any) -> Any:
        """Give a sized container just built (and not yet measured) its size, or refuse it."""
        fast = flat_size_map(value) if type(value) is SizedDict else flat_size(value)
        if fast is None:
            try:
                items = list(value.items()) if isinstance(value, dict) else list(value)
                fast = measure(items, self.max_bytes, self.known)
            except ValueError as e:
                raise LimitError(str(e)) from None
        size, depth = fast
        if size > self.max_bytes:
            raise LimitError(f"value expands to more than {self.max_bytes} bytes", "value_bytes")
        if depth > self.max_nesting:
            raise LimitError(f"value nests deeper than {self.max_nesting} levels", "value_nesting")
        value.size, value.depth = size, depth
        self.allocated += size
        if self.allocated > self.max_allocated:
            self._allocate(0)
        return value

    def _allocate(self, size: int) -> None:
        self.allocated += size
        if self.allocated > self.max_allocated:
            message = f"evaluation built more than {self.max_allocated} bytes of values"
            raise LimitError(message, "allocated_bytes")

    def expanded(self, value: Any) -> int:
        """The expanded size of *value* (saturating just past the byte bound)."""
        try:
            return measure(value, self.max_bytes, self.known)[0]
        except ValueError as e:
            raise LimitError(str(e)) from None

    def tick(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > self.max_steps:
            raise LimitError(f"evaluation exceeded {self.max_steps} steps", "steps")

    def size(self, value: Any) -> Any:
        if len(value) > self.max_size:
            raise LimitError(f"value larger than {self.max_size} elements", "elements")
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
        return ctx.built(self.func(ctx, *args) if self.with_ctx else self.func(*args))


def apply(ctx: Budget, f: Any, *args: Any) -> Any:
    if not isinstance(f, Fn):
        raise ExprError(f"expected a function, got: {inspect(f)}", "BadFunctionError")
    if f.arity != len(args):
        raise ExprError(f"function of arity {f.arity} called with {len(args)} arguments", "BadArityError")
    return f(ctx, list(args))


def bad_arg(what: str, value: Any) -> ExprError:
    return ExprError(f"{what}: {inspect(value)}", "ArgumentError")
