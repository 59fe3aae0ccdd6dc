"""The transfer progress line and the pull's peers-vs-origins summary."""

from __future__ import annotations

import io
import os
import pty

from kraken.cli.blob import pieces_by_role, source_summary
from kraken.cli.progress import Progress, human_bytes, human_seconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_human_units() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(3 * 1024 * 1024) == "3.0 MiB"
    assert human_seconds(59.6) == "1m00s" and human_seconds(5) == "5s" and human_seconds(7300) == "2h01m"


def test_line_has_bytes_rate_and_eta() -> None:
    clock = FakeClock()
    out = io.StringIO()
    progress = Progress("pull", 10 * 1024 * 1024, out, enabled=True, clock=clock)
    clock.now += 2
    progress.advance(4 * 1024 * 1024)
    assert out.getvalue() == "\rpull  4.0 MiB / 10.0 MiB (40 %)  2.0 MiB/s  ETA 3s"
    clock.now += 0.05  # redrawn at most every 0.1 s
    progress.advance(1024 * 1024)
    assert out.getvalue().count("\r") == 1
    clock.now += 0.5
    progress.advance(5 * 1024 * 1024)
    progress.finish()
    last = out.getvalue().rsplit("\r", 1)[1]
    assert last.startswith("pull  10.0 MiB / 10.0 MiB (100 %)") and "ETA" not in last and last.endswith("\n")


def test_disabled_writes_nothing_but_counts() -> None:
    out = io.StringIO()
    progress = Progress.for_terminal("push", 100, out, quiet=False)  # a StringIO is no terminal
    progress.advance(60)
    progress.finish()
    assert out.getvalue() == "" and progress.done == 60


def test_a_terminal_gets_the_line_unless_quiet() -> None:
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as terminal:
        assert not Progress.for_terminal("pull", 10, terminal, quiet=True).enabled
        progress = Progress.for_terminal("pull", 2048, terminal, quiet=False)
        progress.advance(1024)
        progress.finish()
    shown = os.read(master, 4096).decode()
    os.close(master)
    assert shown.startswith("\rpull  1.0 KiB / 2.0 KiB (50 %)") and shown.endswith("\r\n")


METRICS = """# HELP kraken_agent_pieces_received_total pieces received
kraken_agent_pieces_received_total{from_role="origin"} 8.0
kraken_agent_pieces_received_total{from_role="agent"} 3.0
kraken_agent_pieces_received_created{from_role="origin"} 1.7e+09
"""


def test_summary_from_the_agents_counters() -> None:
    after = pieces_by_role(METRICS)
    assert after == {"origin": 8.0, "agent": 3.0}
    assert source_summary(3 * 1024 * 1024, {"origin": 2.0}, after) == (
        "pulled 3.0 MiB: 3 pieces from peers, 6 from origins (33 % from peers)"
    )
    assert source_summary(10, after, after) == "pulled 10 B: already on the agent (no pieces fetched)"


def test_count_bar_draws_done_failed_and_eta() -> None:
    from kraken.cli.progress import CountProgress

    clock = FakeClock()
    out = io.StringIO()
    bar = CountProgress("group rack", out, enabled=True, clock=clock, width=10)
    clock.now += 4
    assert bar.line(50, 100, 2) == "group rack  [#####-----]  50/100 nodes  2 failed  ETA 4s"
    assert bar.line(100, 100) == "group rack  [##########]  100/100 nodes"
    bar.update(1, 4)
    bar.finish()
    assert out.getvalue().startswith("\rgroup rack  [##--------]  1/4 nodes")
    assert out.getvalue().endswith("\n")
    quiet = io.StringIO()
    CountProgress("g", quiet, enabled=False).update(1, 2)
    assert quiet.getvalue() == ""
