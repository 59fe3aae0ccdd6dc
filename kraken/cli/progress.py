"""A one-line progress display for long transfers: bytes, rate and ETA, redrawn in place.

Shown only on a terminal (and not with ``--quiet``); elsewhere every call is a no-op, so
scripts and pipes see only the command's result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(count: float) -> str:
    for unit in UNITS:
        if abs(count) < 1024 or unit == UNITS[-1]:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def human_seconds(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


class Progress:
    """Call :meth:`advance` as bytes move and :meth:`finish` at the end."""

    def __init__(
        self,
        label: str,
        total: int | None,
        stream: TextIO,
        enabled: bool,
        clock: Callable[[], float] = time.monotonic,
        every: float = 0.1,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self.clock = clock
        self.every = every
        self.done = 0
        self.started = clock()
        self._drawn_at: float | None = None
        self._width = 0

    @classmethod
    def for_terminal(cls, label: str, total: int | None, stream: TextIO, quiet: bool) -> Progress:
        return cls(label, total, stream, enabled=not quiet and stream.isatty())

    def advance(self, count: int) -> None:
        self.done += count
        if not self.enabled:
            return
        now = self.clock()
        if self._drawn_at is None or now - self._drawn_at >= self.every:
            self._draw(now)

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        parts = [self.label, human_bytes(self.done)]
        if self.total:
            percent = 100 * self.done / self.total
            parts[-1] += f" / {human_bytes(self.total)} ({percent:.0f} %)"
        parts.append(f"{human_bytes(rate)}/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {human_seconds((self.total - self.done) / rate)}")
        return "  ".join(parts)

    def _draw(self, now: float) -> None:
        text = self.line(now)
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)
        self._drawn_at = now

    def finish(self) -> None:
        """Draw the final figures and end the line."""
        if not self.enabled:
            return
        self._draw(self.clock())
        self.stream.write("\n")
        self.stream.flush()


class CountProgress:
    """A bar for an operation over many items: ``[#####-----] 50/100 nodes  2 failed  ETA 4s``."""

    def __init__(
        self,
        label: str,
        stream: TextIO,
        enabled: bool,
        unit: str = "nodes",
        clock: Callable[[], float] = time.monotonic,
        width: int = 30,
    ) -> None:
        self.label = label
        self.stream = stream
        self.enabled = enabled
        self.unit = unit
        self.clock = clock
        self.width = width
        self.started = clock()
        self._drawn = 0

    def line(self, done: int, total: int, failed: int = 0) -> str:
        filled = self.width * done // total if total else self.width
        parts = [self.label, f"[{'#' * filled}{'-' * (self.width - filled)}]", f"{done}/{total} {self.unit}"]
        if failed:
            parts.append(f"{failed} failed")
        elapsed = self.clock() - self.started
        if 0 < done < total and elapsed > 0:
            parts.append(f"ETA {human_seconds((total - done) * elapsed / done)}")
        return "  ".join(parts)

    def update(self, done: int, total: int, failed: int = 0) -> None:
        if not self.enabled:
            return
        text = self.line(done, total, failed)
        self.stream.write("\r" + text + " " * max(0, self._drawn - len(text)))
        self.stream.flush()
        self._drawn = len(text)

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
