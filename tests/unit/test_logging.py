"""Log output: JSON lines for machines, a level that can change while running."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger

from kraken.core.logging import LogControl


def test_json_lines_and_live_level_changes() -> None:
    stream = io.StringIO()
    control = LogControl("info")
    log = Logger(namespace="kraken.test", observer=control.observer("json", stream))
    log.debug("hidden {n}", n=1)
    log.info("shown {n}", n=2)
    control.set_level("debug")
    log.debug("now shown {n}", n=3)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["n"] for e in events] == [2, 3]
    assert events[1]["text"] == "now shown 3"
    assert events[0]["log_namespace"] == "kraken.test"
