"""Tag rules per repository: immutable tags and retention (sans-IO).

Config (the same shape in ``buildindex`` and in a proxy that keeps its own tags)::

    immutable_tags:                 # a push moving an existing matching tag is refused (DENIED)
      - {repository: "prod/.*", tags: "v[0-9].*"}
    retention:                      # the first rule whose repository matches decides
      - {repository: "ci/.*", keep_last: 10, keep_newer_than: 7d, keep_tags: "release-.*"}

Regular expressions match the whole repository or tag name. A retention rule keeps a tag
when *any* of its ``keep_*`` criteria holds (the ``keep_last`` most recently pushed, those
pushed within ``keep_newer_than``, those matching ``keep_tags``); every other tag of the
repository expires. Immutable tags never expire. Durations are seconds or a number with
``s``, ``m``, ``h``, ``d`` or ``w``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class PolicyConfigError(ValueError):
    """A rule that cannot be used; the message names the key."""


class TagImmutable(Exception):
    """A push or delete would change an immutable tag."""

    def __init__(self, repo: str, tag: str, digest: str) -> None:
        super().__init__(f"{repo}:{tag} is immutable (it points at {digest})")
        self.repo, self.tag, self.digest = repo, tag, digest


@dataclass(frozen=True)
class ImmutableRule:
    repository: re.Pattern[str]
    tags: re.Pattern[str]


@dataclass(frozen=True)
class RetentionRule:
    repository: re.Pattern[str]
    keep_last: int | None = None
    keep_newer_than: float | None = None
    keep_tags: re.Pattern[str] | None = None


def parse_duration(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", value)
        if m:
            return float(m.group(1)) * UNITS[m.group(2) or "s"]
    raise PolicyConfigError(f"{where}: expected a duration (seconds, or e.g. 30m, 12h, 7d), got {value!r}")


def _regex(value: Any, where: str) -> re.Pattern[str]:
    if not isinstance(value, str):
        raise PolicyConfigError(f"{where}: expected a regular expression (a string), got {value!r}")
    try:
        return re.compile(value)
    except re.error as e:
        raise PolicyConfigError(f"{where}: bad regular expression: {e}") from None


def _entries(value: Any, where: str, keys: set[str]) -> Iterable[tuple[str, dict[str, Any]]]:
    if not isinstance(value, list):
        raise PolicyConfigError(f"{where}: expected a list of rules")
    for i, entry in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise PolicyConfigError(f"{at}: expected a mapping")
        unknown = set(entry) - keys
        if unknown:
            known = ", ".join(sorted(keys))
            raise PolicyConfigError(f"{at}: unknown key {sorted(unknown)[0]!r} (known: {known})")
        if "repository" not in entry:
            raise PolicyConfigError(f"{at}: 'repository' (a regular expression) is required")
        yield at, entry


def parse_immutable(value: Any, where: str) -> list[ImmutableRule]:
    rules = []
    for at, entry in _entries(value, where, {"repository", "tags"}):
        if "tags" not in entry:
            raise PolicyConfigError(f"{at}: 'tags' (a regular expression) is required")
        rules.append(ImmutableRule(_regex(entry["repository"], f"{at}.repository"),
                                   _regex(entry["tags"], f"{at}.tags")))
    return rules


def parse_retention(value: Any, where: str) -> list[RetentionRule]:
    rules = []
    for at, entry in _entries(value, where, {"repository", "keep_last", "keep_newer_than", "keep_tags"}):
        keep_last = entry.get("keep_last")
        if keep_last is not None and (not isinstance(keep_last, int) or isinstance(keep_last, bool)
                                      or keep_last < 0):
            raise PolicyConfigError(f"{at}.keep_last: expected a non-negative integer, got {keep_last!r}")
        newer = entry.get("keep_newer_than")
        tags = entry.get("keep_tags")
        if keep_last is None and newer is None and tags is None:
            raise PolicyConfigError(f"{at}: name at least one of keep_last, keep_newer_than, keep_tags "
                                    "(a rule keeping nothing would delete every tag)")
        rules.append(RetentionRule(
            _regex(entry["repository"], f"{at}.repository"),
            keep_last,
            parse_duration(newer, f"{at}.keep_newer_than") if newer is not None else None,
            _regex(tags, f"{at}.keep_tags") if tags is not None else None,
        ))
    return rules


class TagRules:
    def __init__(self, immutable: list[ImmutableRule] | None = None,
                 retention: list[RetentionRule] | None = None) -> None:
        self.immutable = immutable or []
        self.retention = retention or []

    @classmethod
    def from_config(cls, immutable: Any, retention: Any, where: str) -> TagRules:
        return cls(parse_immutable(immutable, f"{where}.immutable_tags"),
                   parse_retention(retention, f"{where}.retention"))

    def is_immutable(self, repo: str, tag: str) -> bool:
        return any(r.repository.fullmatch(repo) and r.tags.fullmatch(tag) for r in self.immutable)

    def check_put(self, repo: str, tag: str, current: str | None, new: str) -> None:
        """Refuse moving an existing immutable tag (pushing the same digest again is fine)."""
        if current is not None and current != new and self.is_immutable(repo, tag):
            raise TagImmutable(repo, tag, current)

    def check_delete(self, repo: str, tag: str, current: str) -> None:
        if self.is_immutable(repo, tag):
            raise TagImmutable(repo, tag, current)

    def rule_for(self, repo: str) -> RetentionRule | None:
        for rule in self.retention:
            if rule.repository.fullmatch(repo):
                return rule
        return None

    def expired(self, repo: str, tags: Iterable[tuple[str, float]], now: float) -> list[str]:
        """Of *tags* (``(tag, pushed at)``), those the retention rules let go, sorted."""
        rule = self.rule_for(repo)
        if rule is None:
            return []
        newest_first = sorted(tags, key=lambda t: (-t[1], t[0]))
        out = []
        for rank, (tag, pushed) in enumerate(newest_first):
            if self.is_immutable(repo, tag):
                continue
            if rule.keep_last is not None and rank < rule.keep_last:
                continue
            if rule.keep_newer_than is not None and now - pushed < rule.keep_newer_than:
                continue
            if rule.keep_tags is not None and rule.keep_tags.fullmatch(tag):
                continue
            out.append(tag)
        return sorted(out)
