"""Safe evaluation of the Elixir expression subset used in pipeline and service definitions.

``compile_expression(source, helpers)`` tokenizes and parses the source (never Python
``eval``), checks every variable and function it names, and returns an :class:`Expression`
whose ``evaluate(args)`` runs under a :class:`Budget` of steps, call depth and value sizes.
Errors are :class:`ExprError` values naming the error kind, position and source.
"""

from __future__ import annotations

import inspect as pyinspect
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from kraken.pipeline.expr.builtins import MODULES
from kraken.pipeline.expr.builtins.access import access_get
from kraken.pipeline.expr.builtins.kernel import KERNEL
from kraken.pipeline.expr.functions import Budget, Fn, NamedFn, apply
from kraken.pipeline.expr.operators import (
    op_add,
    op_concat,
    op_div,
    op_in,
    op_lconcat,
    op_lsub,
    op_match_str,
    op_mul,
    op_pow,
    op_range,
    op_sub,
)
from kraken.pipeline.expr.parser import Node, parse
from kraken.pipeline.expr.sizes import SizedDict, SizedList, SizedTuple
from kraken.pipeline.expr.terms import (
    Atom,
    ExprError,
    LimitError,
    inspect,
    is_number,
    term_cmp,
    term_eq,
    to_json,
    to_string,
    truthy,
)

Code = Callable[[Budget, dict[str, Any]], Any]
Helpers = Mapping[str, Callable[..., Any]]

SPECIAL_FORMS = {"if", "unless", "case", "cond", "fn"}


def _arities(func: Callable[..., Any], skip: int) -> tuple[int, int]:
    try:
        params = list(pyinspect.signature(func).parameters.values())[skip:]
    except (TypeError, ValueError):
        return (0, 99)
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        low = sum(1 for p in params if p.kind == p.POSITIONAL_OR_KEYWORD and p.default is p.empty)
        return (low, 99)
    low = sum(1 for p in params if p.default is p.empty)
    return (low, len(params))


_BINOPS: dict[str, Callable[[Budget, Any, Any], Any]] = {
    "+": op_add,
    "-": op_sub,
    "*": op_mul,
    "/": op_div,
    "**": op_pow,
    "<>": op_concat,
    "++": op_lconcat,
    "--": op_lsub,
    "..": op_range,
    "in": op_in,
    "=~": op_match_str,
    "==": lambda c, a, b: term_eq(a, b),
    "!=": lambda c, a, b: not term_eq(a, b),
    "===": lambda c, a, b: term_eq(a, b, True),
    "!==": lambda c, a, b: not term_eq(a, b, True),
    "<": lambda c, a, b: term_cmp(a, b) < 0,
    ">": lambda c, a, b: term_cmp(a, b) > 0,
    "<=": lambda c, a, b: term_cmp(a, b) <= 0,
    ">=": lambda c, a, b: term_cmp(a, b) >= 0,
    "not in": lambda c, a, b: not op_in(c, a, b),
}


# operators whose results are new lists or strings (the others give numbers and booleans)
_BUILDING = frozenset({"++", "--", "..", "<>"})


class Closure(Fn):
    def __init__(
        self, clauses: list[tuple[list[Any], Code | None, Code]], env: dict[str, Any], arity: int
    ) -> None:
        self.clauses, self.env, self.arity = clauses, env, arity

    def __call__(self, ctx: Budget, args: list[Any]) -> Any:
        ctx.tick()
        ctx.depth += 1
        if ctx.depth > ctx.max_depth:
            raise LimitError(f"function calls nested deeper than {ctx.max_depth}")
        try:
            for matchers, guard, body in self.clauses:
                binds: dict[str, Any] = {}
                if all(m(ctx, self.env, v, binds) for m, v in zip(matchers, args)):
                    env = {**self.env, **binds}
                    if guard is not None and not truthy(guard(ctx, env)):
                        continue
                    return body(ctx, env)
            raise ExprError(
                f"no function clause matching in anonymous fn/{self.arity}", "FunctionClauseError"
            )
        finally:
            ctx.depth -= 1


class Compiler:
    def __init__(self, source: str, helpers: Helpers) -> None:
        self.src = source
        self.helpers = helpers

    def err(self, message: str, pos: int, kind: str = "CompileError") -> ExprError:
        return ExprError(message, kind, pos, self.src)

    def located(self, code: Code, pos: int) -> Code:
        src = self.src

        def run(ctx: Budget, env: dict[str, Any]) -> Any:
            try:
                return code(ctx, env)
            except ExprError as e:
                raise e.locate(pos, src) from None
            except RecursionError:
                raise LimitError("expression recursion too deep").locate(pos, src) from None

        return run

    # -- expressions -----------------------------------------------------------------------------
    def compile(self, node: Node, scope: set[str]) -> Code:
        kind = node[0]
        method = getattr(self, "c_" + kind, None)
        if method is None:
            raise self.err(f"unsupported construct {kind}", node[1])
        return method(node, scope)

    def c_lit(self, node: Node, scope: set[str]) -> Code:
        value = node[2]
        return lambda ctx, env: value

    def c_var(self, node: Node, scope: set[str]) -> Code:
        name = node[2]
        if name not in scope:
            if name in KERNEL or name in self.helpers:
                raise self.err(f"undefined variable {name} (call it as {name}(...))", node[1])
            raise self.err(f"undefined variable {name}", node[1])
        return lambda ctx, env: env[name]

    def c_caparg(self, node: Node, scope: set[str]) -> Code:
        name = f"&{node[2]}"
        if name not in scope:
            raise self.err(f"capture argument &{node[2]} outside of a capture", node[1])
        return lambda ctx, env: env[name]

    def c_str(self, node: Node, scope: set[str]) -> Code:
        parts = [p if isinstance(p, str) else self.compile(p, scope) for p in node[2]]

        def run(ctx: Budget, env: dict[str, Any]) -> str:
            pieces = [p if isinstance(p, str) else to_string(p(ctx, env)) for p in parts]
            if sum(map(len, pieces)) > ctx.max_size:
                raise LimitError(f"string longer than {ctx.max_size} characters")
            return "".join(pieces)

        return self.located(run, node[1])

    def c_list(self, node: Node, scope: set[str]) -> Code:
        items = [self.compile(x, scope) for x in node[2]]
        tail = self.compile(node[3], scope) if node[3] is not None else None

        def run(ctx: Budget, env: dict[str, Any]) -> list[Any]:
            out = SizedList([f(ctx, env) for f in items])
            if tail is not None:
                rest = tail(ctx, env)
                if not isinstance(rest, list):
                    raise ExprError("improper lists are not supported", "ArgumentError")
                out.extend(rest)
                ctx.size(out)
            return ctx.seal(out)

        return self.located(run, node[1])

    def c_tuple(self, node: Node, scope: set[str]) -> Code:
        items = [self.compile(x, scope) for x in node[2]]
        return self.located(lambda ctx, env: ctx.seal(SizedTuple(f(ctx, env) for f in items)), node[1])

    def c_kwlist(self, node: Node, scope: set[str]) -> Code:
        items = [(Atom(k), self.compile(v, scope)) for k, v in node[2]]
        def run(ctx: Budget, env: dict[str, Any]) -> Any:
            return ctx.seal(SizedList([ctx.seal(SizedTuple((k, f(ctx, env)))) for k, f in items]))

        return self.located(run, node[1])

    def c_map(self, node: Node, scope: set[str]) -> Code:
        pairs = [(self.compile(k, scope), self.compile(v, scope)) for k, v in node[2]]
        base = self.compile(node[3], scope) if node[3] is not None else None

        def run(ctx: Budget, env: dict[str, Any]) -> dict[Any, Any]:
            ctx.tick()
            out = SizedDict()
            if base is not None:
                b = base(ctx, env)
                if not isinstance(b, dict):
                    raise ExprError(f"expected a map, got: {inspect(b)}", "BadMapError")
                out = SizedDict(b)
            for kf, vf in pairs:
                k = kf(ctx, env)
                if base is not None and k not in out:
                    raise ExprError(f"key {inspect(k)} not found in map update", "KeyError")
                try:
                    out[k] = vf(ctx, env)
                except TypeError:
                    raise ExprError(f"unsupported map key {inspect(k)}", "ArgumentError") from None
            return ctx.seal(out)

        return self.located(run, node[1])

    def c_access(self, node: Node, scope: set[str]) -> Code:
        obj, key = self.compile(node[2], scope), self.compile(node[3], scope)

        def run(ctx: Budget, env: dict[str, Any]) -> Any:
            try:
                return access_get(obj(ctx, env), key(ctx, env))
            except TypeError:
                raise ExprError("unsupported key type for Access", "ArgumentError") from None

        return self.located(run, node[1])

    def c_block(self, node: Node, scope: set[str]) -> Code:
        inner = set(scope)
        codes = [self.compile(x, inner) for x in node[2]]

        def run(ctx: Budget, env: dict[str, Any]) -> Any:
            result = None
            for c in codes:
                result = c(ctx, env)
            return result

        return run

    def c_binop(self, node: Node, scope: set[str]) -> Code:
        op = node[2]
        left, right = self.compile(node[3], scope), self.compile(node[4], scope)
        if op == "&&":

            def run(ctx: Budget, env: dict[str, Any]) -> Any:
                v = left(ctx, env)
                return right(ctx, env) if v is not None and v is not False else v

            return run
        if op == "||":

            def run(ctx: Budget, env: dict[str, Any]) -> Any:
                v = left(ctx, env)
                return v if v is not None and v is not False else right(ctx, env)

            return run
        if op in ("and", "or"):

            def run(ctx: Budget, env: dict[str, Any]) -> Any:
                v = left(ctx, env)
                if not isinstance(v, bool):
                    raise ExprError(
                        f"expected a boolean on the left-hand side of {op!r}, got: {inspect(v)}",
                        "BadBooleanError",
                    )
                if (op == "and") == v:
                    return right(ctx, env)
                return v

            return self.located(run, node[1])
        fn = _BINOPS[op]
        if op not in _BUILDING:

            def compute(ctx: Budget, env: dict[str, Any]) -> Any:
                ctx.tick()
                return fn(ctx, left(ctx, env), right(ctx, env))

            return self.located(compute, node[1])

        def operate(ctx: Budget, env: dict[str, Any]) -> Any:
            ctx.tick()
            return ctx.built(fn(ctx, left(ctx, env), right(ctx, env)))

        return self.located(operate, node[1])

    def c_unop(self, node: Node, scope: set[str]) -> Code:
        op = node[2]
        if op == "^":
            raise self.err("the pin operator ^ is only allowed in patterns", node[1])
        operand = self.compile(node[3], scope)

        def run(ctx: Budget, env: dict[str, Any]) -> Any:
            v = operand(ctx, env)
            if op == "!":
                return not truthy(v)
            if op == "not":
                if not isinstance(v, bool):
                    raise ExprError(f"not expects a boolean, got: {inspect(v)}", "ArgumentError")
                return not v
            if not is_number(v):
                raise ExprError(f"bad argument in arithmetic expression: {op}{inspect(v)}", "ArithmeticError")
            return -v if op == "-" else v

        return self.located(run, node[1])

    def c_if(self, node: Node, scope: set[str]) -> Code:
        cond = self.compile(node[2], scope)
        then = self.compile(node[3], set(scope)) if node[3] is not None else (lambda ctx, env: None)
        other = self.compile(node[4], set(scope)) if node[4] is not None else (lambda ctx, env: None)

        def run(ctx: Budget, env: dict[str, Any]) -> Any:
            v = cond(ctx, env)
            return then(ctx, env) if v is not None and v is not False else other(ctx, env)

        return run

    def c_cond(self, node: Node, scope: set[str]) -> Code:
        clauses = [(self.compile(c, scope), self.compile(b, set(scope))) for c, b in node[2]]

        def run(ctx: Budget, env: dict[str, Any]) -> Any:
            for c, b in clauses:
                ctx.tick()
                if truthy(c(ctx, env)):
                    return b(ctx, env)
            raise ExprError("no cond clause evaluated to a truthy value", "CondClauseError")

        return self.located(run, node[1])

    def c_case(self, node: Node, scope: set[str]) -> Code:
        subject = self.compile(node[2], scope)
        clauses = []
        for heads, guard, body in node[3]:
            if len(heads) != 1:
                raise self.err("case clauses take exactly one pattern", node[1])
            inner = set(scope)
            matcher = self.pattern(heads[0], inner)
            check = self.compile(guard, inner) if guard else None
            clauses.append((matcher, check, self.compile(body, inner)))

        def run(ctx: Budget, env: dict[str, Any]) -> Any:
            v = subject(ctx, env)
            for m, g, b in clauses:
                ctx.tick()
                binds: dict[str, Any] = {}
                if m(ctx, env, v, binds):
                    inner_env = {**env, **binds}
                    if g is not None and not truthy(g(ctx, inner_env)):
                        continue
                    return b(ctx, inner_env)
            raise ExprError(f"no case clause matching: {inspect(v)}", "CaseClauseError")

        return self.located(run, node[1])

    def c_match(self, node: Node, scope: set[str]) -> Code:
        value = self.compile(node[3], scope)
        matcher = self.pattern(node[2], scope)

        def run(ctx: Budget, env: dict[str, Any]) -> Any:
            v = value(ctx, env)
            binds: dict[str, Any] = {}
            if not matcher(ctx, env, v, binds):
                raise ExprError(f"no match of right hand side value: {inspect(v)}", "MatchError")
            env.update(binds)
            return v

        return self.located(run, node[1])

    def c_fn(self, node: Node, scope: set[str]) -> Code:
        clauses = []
        arity = len(node[2][0][0])
        for heads, guard, body in node[2]:
            inner = set(scope)
            matchers = [self.pattern(h, inner) for h in heads]
            check = self.compile(guard, inner) if guard else None
            clauses.append((matchers, check, self.compile(body, inner)))
        return lambda ctx, env: Closure(clauses, env, arity)

    def c_capture(self, node: Node, scope: set[str]) -> Code:
        arity = node[3]
        names = [f"&{i}" for i in range(1, arity + 1)]
        body = self.compile(node[2], scope | set(names))

        def bind(name: str) -> Callable[..., bool]:
            def m(ctx: Budget, env: dict[str, Any], v: Any, binds: dict[str, Any]) -> bool:
                binds[name] = v
                return True

            return m

        matchers = [bind(n) for n in names]
        return lambda ctx, env: Closure([(matchers, None, body)], env, arity)

    def c_capref(self, node: Node, scope: set[str]) -> Code:
        _, pos, mod, name, arity = node
        func, skip = self.resolve(mod, name, arity, pos)
        fn = NamedFn(f"{mod + '.' if mod else ''}{name}", arity, func, with_ctx=skip == 1)
        return lambda ctx, env: fn

    def resolve(self, mod: str | None, name: str, arity: int, pos: int) -> tuple[Callable[..., Any], int]:
        """The Python function for a call and how many leading context arguments it takes."""
        if mod is None:
            if name in KERNEL:
                func, skip = KERNEL[name], 1
            elif name in self.helpers:
                func, skip = self.helpers[name], 0
            elif name == "eval":
                raise self.err("eval is not allowed", pos)
            else:
                raise self.err(f"undefined function {name}/{arity} (there is no such import)", pos)
            shown = name
        else:
            table = MODULES.get(mod)
            if table is None:
                raise self.err(
                    f"Non local call: {mod}.{name}/{arity} (module {mod} is not allowed)", pos, "RuntimeError"
                )
            if name not in table:
                raise self.err(
                    f"function {mod}.{name}/{arity} is undefined or private", pos, "UndefinedFunctionError"
                )
            func, skip, shown = table[name], 1, f"{mod}.{name}"
        low, high = _arities(func, skip)
        if not low <= arity <= high:
            raise self.err(f"undefined function {shown}/{arity}", pos, "UndefinedFunctionError")
        return func, skip

    def c_call(self, node: Node, scope: set[str]) -> Code:
        _, pos, name, args = node
        if name in SPECIAL_FORMS:
            raise self.err(f"invalid use of {name}", pos)
        func, skip = self.resolve(None, name, len(args), pos)
        return self._call(func, skip, args, scope, pos)

    def c_rcall(self, node: Node, scope: set[str]) -> Code:
        _, pos, mod, name, args = node
        func, skip = self.resolve(mod, name, len(args), pos)
        return self._call(func, skip, args, scope, pos)

    def _call(self, func: Callable[..., Any], skip: int, args: list[Node], scope: set[str], pos: int) -> Code:
        codes = [self.compile(a, scope) for a in args]
        if skip:

            def run(ctx: Budget, env: dict[str, Any]) -> Any:
                ctx.tick()
                return ctx.built(func(ctx, *[c(ctx, env) for c in codes]))
        else:

            def run(ctx: Budget, env: dict[str, Any]) -> Any:
                ctx.tick()
                values = [to_json(c(ctx, env)) for c in codes]
                try:
                    return ctx.built(func(*values))
                except ExprError:
                    raise
                except Exception as e:
                    raise ExprError(f"helper failed: {type(e).__name__}: {e}", "RuntimeError") from None

        return self.located(run, pos)

    def c_dcall(self, node: Node, scope: set[str]) -> Code:
        fexpr = self.compile(node[2], scope)
        codes = [self.compile(a, scope) for a in node[3]]

        def run(ctx: Budget, env: dict[str, Any]) -> Any:
            return apply(ctx, fexpr(ctx, env), *[c(ctx, env) for c in codes])

        return self.located(run, node[1])

    # -- patterns ----------------------------------------------------------------------------------
    Matcher = Callable[[Budget, dict[str, Any], Any, dict[str, Any]], bool]

    def pattern(self, node: Node, scope: set[str]) -> Matcher:
        kind = node[0]
        if kind == "lit":
            value = node[2]
            return lambda ctx, env, v, b: term_eq(value, v, strict=True)
        if kind == "var":
            name = node[2]
            if name.startswith("_"):
                return lambda ctx, env, v, b: True
            scope.add(name)

            def bind(ctx: Budget, env: dict[str, Any], v: Any, b: dict[str, Any]) -> bool:
                if name in b:
                    return term_eq(b[name], v, strict=True)
                b[name] = v
                return True

            return bind
        if kind == "unop" and node[2] == "^" and node[3][0] == "var":
            name = node[3][2]
            if name not in scope:
                raise self.err(f"undefined variable ^{name}", node[1])
            return lambda ctx, env, v, b: term_eq(env[name], v, strict=True)
        if kind == "tuple":
            subs = [self.pattern(x, scope) for x in node[2]]
            return lambda ctx, env, v, b: (
                isinstance(v, tuple)
                and len(v) == len(subs)
                and all(m(ctx, env, x, b) for m, x in zip(subs, v))
            )
        if kind == "list":
            subs = [self.pattern(x, scope) for x in node[2]]
            tail = self.pattern(node[3], scope) if node[3] is not None else None
            n = len(subs)

            def match_list(ctx: Budget, env: dict[str, Any], v: Any, b: dict[str, Any]) -> bool:
                if not isinstance(v, list) or len(v) < n or (tail is None and len(v) != n):
                    return False
                if not all(m(ctx, env, x, b) for m, x in zip(subs, v)):
                    return False
                return tail is None or tail(ctx, env, v[n:], b)

            return match_list
        if kind == "map" and node[3] is None:
            pairs = [(self.compile(k, scope), self.pattern(p, scope)) for k, p in node[2]]

            def match_map(ctx: Budget, env: dict[str, Any], v: Any, b: dict[str, Any]) -> bool:
                if not isinstance(v, dict):
                    return False
                for kf, m in pairs:
                    k = kf(ctx, env)
                    if k not in v or not m(ctx, env, v[k], b):
                        return False
                return True

            return match_map
        if kind == "kwlist":
            return self.pattern(
                (
                    "list",
                    node[1],
                    [("tuple", node[1], [("lit", node[1], Atom(k)), p]) for k, p in node[2]],
                    None,
                ),
                scope,
            )
        if kind == "binop" and node[2] == "<>" and node[3][0] == "lit" and isinstance(node[3][2], str):
            prefix, rest = node[3][2], self.pattern(node[4], scope)
            return lambda ctx, env, v, b: (
                isinstance(v, str) and v.startswith(prefix) and rest(ctx, env, v[len(prefix) :], b)
            )
        if kind == "match":
            left, right = self.pattern(node[2], scope), self.pattern(node[3], scope)
            return lambda ctx, env, v, b: left(ctx, env, v, b) and right(ctx, env, v, b)
        raise self.err("invalid pattern", node[1])


class Expression:
    """A compiled expression; ``evaluate(args)`` returns its value or raises :class:`ExprError`."""

    __slots__ = ("_code", "source")

    def __init__(self, source: str, code: Code) -> None:
        self.source = source
        self._code = code

    def evaluate(self, args: Any, budget: Budget | None = None) -> Any:
        ctx = budget if budget is not None else Budget()
        try:
            return self._code(ctx, {"args": args, "helpers": None})
        except ExprError as e:
            raise e.locate(None, self.source) from None
        except RecursionError:
            raise LimitError("expression recursion too deep").locate(None, self.source) from None

    def __call__(self, args: Any) -> Any:
        return to_json(self.evaluate(args))

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


@lru_cache(maxsize=4096)
def _compile_cached(source: str) -> Expression:
    return _compile(source, {})


def _compile(source: str, helpers: Helpers) -> Expression:
    try:
        tree = parse(source)
        code = Compiler(source, helpers).compile(tree, {"args", "helpers"})
    except RecursionError:
        raise ExprError("expression nested too deeply", "SyntaxError", 0, source) from None
    return Expression(source, code)


def compile_expression(source: str, helpers: Helpers | None = None) -> Expression:
    """Parse and check *source*; helper functions are callable unqualified by name."""
    if not isinstance(source, str):
        raise ExprError(f"an expression must be a string, got {type(source).__name__}", "ArgumentError")
    if not helpers:
        return _compile_cached(source)
    return _compile(source, helpers)


def evaluate(source: str, args: Any, helpers: Helpers | None = None) -> Any:
    """Compile and evaluate; the JSON-able result (tuples as lists, atoms as names)."""
    return compile_expression(source, helpers)(args)
