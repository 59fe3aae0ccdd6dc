"""Durations in words, as the original's admin dump prints them ("1 minute 2 seconds")."""

from __future__ import annotations

_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def time_delta_in_words(seconds: float) -> str:
    left = int(seconds)
    words = []
    for name, size in _UNITS:
        count, left = divmod(left, size)
        if count:
            words.append(f"{count} {name}{'s' if count != 1 else ''}")
    return " ".join(words) or "0 seconds"
