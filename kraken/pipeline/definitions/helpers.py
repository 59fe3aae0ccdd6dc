"""Helper modules: named groups of Python functions that expressions call unqualified.

``register_helper("Helpers.FetchHelper", {"fetch": f, ...})``. A definition's ``helpers``
list names them; a name also resolves by its last dotted part, so the original's
``MyApp.Kraken.Helpers.YesNoBranch`` finds ``YesNoBranch``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from kraken.pipeline.definitions.mapping import DefinitionError
from kraken.pipeline.names import modulize

Functions = dict[str, Callable[..., Any]]
_HELPERS: dict[str, Functions] = {}


def register_helper(name: str, functions: Functions) -> None:
    _HELPERS[modulize(name)] = dict(functions)


def find_helper(name: str) -> Functions | None:
    key = modulize(name)
    if key in _HELPERS:
        return _HELPERS[key]
    return _HELPERS.get(key.rsplit(".", 1)[-1])


def resolve_helpers(names: Any, field: str) -> Functions:
    if names is None:
        return {}
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DefinitionError("helpers must be a list of helper module names", field)
    out: Functions = {}
    for i, name in enumerate(names):
        functions = find_helper(name)
        if functions is None:
            known = ", ".join(sorted(_HELPERS)) or "none"
            raise DefinitionError(f"Helper module '{name}' doesn't exist! (known: {known})", f"{field}[{i}]")
        out.update(functions)
    return out


def merged(*groups: Iterable[tuple[str, Callable[..., Any]]] | Functions) -> Functions:
    out: Functions = {}
    for g in groups:
        out.update(g)
    return out


def _get_path(data: Any, path: Any) -> Any:
    for key in path if isinstance(path, list) else [path]:
        data = data.get(key) if isinstance(data, dict) else None
    return data


register_helper(
    "Helpers.FetchHelper",
    {
        "fetch": lambda args, key: args[key],
        "get": lambda args, key: args.get(key) if isinstance(args, dict) else None,
    },
)
register_helper(
    "YesNoBranch",
    {
        "yes_or_no": lambda args, path: (
            "no" if _get_path(args, path) is None or _get_path(args, path) is False else "yes"
        ),
    },
)
register_helper(
    "Helpers.Math",
    {
        "inc_by_one": lambda x: x + 1,
        "mult_by_two": lambda x: x * 2,
        "dec_by_five": lambda args: args["x"] - 5,
    },
)
