"""Lambda modules of the original's examples and tests, registered by their module names."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from twisted.logger import Logger

from kraken.pipeline.lambdas.registry import register_lambda

log = Logger(namespace="kraken.pipeline.lambdas")


def _num(args: dict[str, Any], key: str) -> Any:
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"no function clause matching: {key} must be a number, got {value!r}")
    return value


def _log(event: Any) -> Any:
    log.info("log lambda: {event}", event=event)
    return event


register_lambda(
    "SimpleMath",
    SimpleNamespace(
        add=lambda a: {"sum": _num(a, "a") + _num(a, "b")},
        mult_by_two=lambda a: {"result": _num(a, "x") * 2},
        add_one=lambda a: {"result": _num(a, "x") + 1},
        log=_log,
    ),
)

register_lambda(
    "AddMultMinus",
    SimpleNamespace(
        add_one=lambda a: {"event": _num(a, "event") + 1},
        mult_by_two=lambda a: {"event": _num(a, "event") * 2},
        minus_three=lambda a: {"event": _num(a, "event") - 3},
    ),
)

register_lambda(
    "Greeter",
    SimpleNamespace(
        greet=lambda a: {"message": f"Hello, {a['name']}!"},
        no_greet=lambda a: {"message": f"I've already said hello to you, {a['name']}."},
    ),
)


def _clone(args: dict[str, Any]) -> dict[str, Any]:
    event = args["event"]
    return {"events": [event, {**event, "report": True}], "memo": args.get("memo")}


register_lambda("Clone", SimpleNamespace(clone=_clone))
register_lambda("IoInspect", SimpleNamespace(print=lambda a: (_log(a), a)[1]))


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


register_lambda(
    "Distance",
    SimpleNamespace(
        closest=lambda a: {
            "closest": min(a["names"], key=lambda n: _levenshtein(a["name"], n)) if a["names"] else None
        },
    ),
)


def _decompose(args: dict[str, Any]) -> dict[str, Any]:
    return {"events": [{"word": w} for w in args["string"].split()]}


def _recompose(args: dict[str, Any]) -> dict[str, Any]:
    """Join words into lines of at most ``limit`` (10) characters; emit full lines."""
    limit = args.get("limit") or 10
    memo = args.get("memo") or ""
    word = args["word"]
    candidate = f"{memo} {word}" if memo else word
    if len(candidate) <= limit:
        return {"events": [], "memo": candidate}
    return {"events": [{"line": memo}] if memo else [], "memo": word}


register_lambda("Telegram", SimpleNamespace(decompose=_decompose, recompose=_recompose))
