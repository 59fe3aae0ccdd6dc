"""The safe expression interpreter: the Elixir expression subset of pipeline and service
definitions, tokenized (``lexer``), parsed (``parser``) and compiled to closures
(``interpreter``) that run under a budget; never Python ``eval``.

``terms`` holds the values and their Elixir semantics (equality, order, printing),
``functions`` the function values and the budget, ``operators`` and ``builtins`` what
expressions may call.
"""

from kraken.pipeline.expr.functions import Budget
from kraken.pipeline.expr.interpreter import Expression, compile_expression, evaluate
from kraken.pipeline.expr.terms import ExprError, LimitError, to_json

__all__ = ["Budget", "ExprError", "Expression", "LimitError", "compile_expression", "evaluate", "to_json"]
