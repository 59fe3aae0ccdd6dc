"""Log output: JSON lines for machines, a level that can change while running."""

from __future__ import annotations

import io
import json
import re

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


def test_text_lines_carry_microseconds() -> None:
    stream = io.StringIO()
    log = Logger(namespace="kraken.test", observer=LogControl("info").observer("text", stream))
    log.info("dialing {peer}", peer="10.0.0.1")
    stamp, _, rest = stream.getvalue().partition(" ")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d{4}", stamp), stamp
    assert rest.strip() == "[kraken.test#info] dialing 10.0.0.1"
