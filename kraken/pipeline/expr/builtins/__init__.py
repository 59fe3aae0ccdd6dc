"""The modules expressions may call (``Enum.map(...)``, ``String.upcase(...)``) and the
``Kernel`` functions they call unqualified. Every builtin takes the evaluation budget ``ctx``
first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kraken.pipeline.expr.builtins.access import ACCESS
from kraken.pipeline.expr.builtins.enumerables import ENUM
from kraken.pipeline.expr.builtins.kernel import KERNEL
from kraken.pipeline.expr.builtins.lists import LIST
from kraken.pipeline.expr.builtins.maps import MAP
from kraken.pipeline.expr.builtins.strings import STRING

MODULES: dict[str, dict[str, Callable[..., Any]]] = {
    "Access": ACCESS,
    "Enum": ENUM,
    "List": LIST,
    "Map": MAP,
    "String": STRING,
    "Kernel": KERNEL,
}
