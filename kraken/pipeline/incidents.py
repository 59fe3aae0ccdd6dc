"""Unexpected errors: the traceback goes to the server log under an error id, and the
client gets the id, never the traceback."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger(namespace="kraken.pipeline.incidents")


def new_error_id() -> str:
    return secrets.token_hex(6)


def record(
    error: BaseException | Failure, what: str, redact: Callable[[str], str] | None = None
) -> str:
    """Log *error* with its traceback under a new error id, and return the id. With *redact*,
    the traceback is logged as text passed through it (it may quote secrets)."""
    error_id = new_error_id()
    failure = error if isinstance(error, Failure) else Failure(error, type(error), error.__traceback__)
    if redact is None:
        log.failure("{what} (error id {error_id})", failure, what=what, error_id=error_id)
    else:
        log.error(
            "{what} (error id {error_id})\n{traceback}",
            what=what,
            error_id=error_id,
            traceback=redact(failure.getTraceback()),
        )
    return error_id
