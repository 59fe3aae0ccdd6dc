"""Lambdas by name: ``register_lambda("SimpleMath", obj)`` makes ``obj``'s attributes the
functions a lambda service started with ``{"module": "SimpleMath"}`` calls. A name also
resolves by its last dotted part.
"""

from __future__ import annotations

from typing import Any

from kraken.pipeline.names import modulize

_LAMBDAS: dict[str, Any] = {}


def register_lambda(name: str, obj: Any) -> None:
    _LAMBDAS[modulize(name)] = obj


def find_lambda(name: str) -> Any:
    key = modulize(name)
    return _LAMBDAS.get(key, _LAMBDAS.get(key.rsplit(".", 1)[-1]))
