"""Structured logging through ``twisted.logger``: text for people, JSON lines for machines.

A server's ``log`` config section picks the format, file and level; :class:`LogControl` holds
the level so it can change while the server runs (``kraken pubsub log-level debug``).
``twistd --logger kraken.core.logging.json_observer`` selects JSON lines without a config.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    eventAsJSON,
    formatEvent,
    textFileLogObserver,
)
from zope.interface import implementer

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%z"  # microseconds: peer-wire events come many per second

LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
    "critical": LogLevel.critical,
}


class LogControl:
    """The live log level of one process."""

    def __init__(self, level: str = "info") -> None:
        self.predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
        self.level = level

    def set_level(self, level: str) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r}; levels: {', '.join(LEVELS)}")
        self.predicate.setLogLevelForNamespace("", LEVELS[level])
        self.level = level

    def observer(self, fmt: str = "text", stream: IO[Any] | None = None) -> ILogObserver:
        stream = stream if stream is not None else sys.stdout
        if fmt == "json":
            base: ILogObserver = JSONLinesObserver(stream)
        else:
            base = textFileLogObserver(stream, timeFormat=TIME_FORMAT)
        return FilteringLogObserver(base, [self.predicate])


@implementer(ILogObserver)
class JSONLinesObserver:
    """One JSON object per line: the event's fields plus ``text``, the formatted message."""

    def __init__(self, stream: IO[Any]) -> None:
        self.stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        record = dict(event)
        record["text"] = formatEvent(event)
        self.stream.write(eventAsJSON(record) + "\n")
        self.stream.flush()


def open_log_file(path: str | None) -> IO[Any]:
    if path is None:
        return sys.stdout
    return open(path, "a", buffering=1, encoding="utf-8")


def json_observer() -> ILogObserver:
    """``twistd --logger`` factory: JSON lines on standard output, level info."""
    return LogControl("info").observer("json")
