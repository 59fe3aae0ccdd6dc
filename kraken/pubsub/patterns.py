"""Pattern subscriptions: NATS-style wildcard topics and the index that matches them.

A topic is split into tokens on ``.``. In a pattern, a token ``*`` matches exactly one token
(any bytes, the empty token too) and a last token ``>`` matches one or more tokens; every
other token matches itself. ``a.*.c`` matches ``a.b.c``; ``a.>`` matches ``a.b`` and
``a.b.c`` but not ``a``. A ``*`` or ``>`` inside a longer token is an ordinary character.

:class:`PatternIndex` is a token trie: matching a topic costs its token count times the
number of trie branches alive at once, and results are cached per topic until the set of
patterns changes.
"""

from __future__ import annotations

from collections.abc import Hashable
from functools import lru_cache
from typing import Generic, TypeVar

STAR = b"*"
TAIL = b">"

T = TypeVar("T", bound=Hashable)


class BadPattern(ValueError):
    """A pattern that is not well formed; the message says why."""


def check_pattern(pattern: bytes, max_bytes: int) -> tuple[bytes, ...]:
    """:func:`compile_pattern` for untrusted input: also refuses patterns over *max_bytes*."""
    if len(pattern) > max_bytes:
        raise BadPattern(f"pattern of {len(pattern)} bytes is over the limit of {max_bytes}")
    return compile_pattern(pattern)


@lru_cache(maxsize=4096)
def compile_pattern(pattern: bytes) -> tuple[bytes, ...]:
    """The tokens of *pattern*; :class:`BadPattern` if it is empty, has an empty token or a
    ``>`` that is not the last token."""
    if not pattern:
        raise BadPattern("a pattern cannot be empty")
    tokens = tuple(pattern.split(b"."))
    for i, token in enumerate(tokens):
        if not token:
            raise BadPattern(f"pattern {pattern[:60]!r} has an empty token")
        if token == TAIL and i != len(tokens) - 1:
            raise BadPattern(f"pattern {pattern[:60]!r}: '>' must be the last token")
    return tokens


def matches(tokens: tuple[bytes, ...], topic: bytes) -> bool:
    """Whether the compiled pattern *tokens* matches *topic* (the reference definition)."""
    parts = topic.split(b".")
    for i, token in enumerate(tokens):
        if token == TAIL:
            return len(parts) > i
        if i >= len(parts) or (token != STAR and token != parts[i]):
            return False
    return len(parts) == len(tokens)


def parse_patterns(data: bytes) -> list[bytes]:
    """Patterns of a ``psubscribe``/``punsubscribe`` data block: separated by spaces (empty
    pieces from repeated or trailing spaces are skipped)."""
    return [p for p in data.split(b" ") if p]


class _Node(Generic[T]):
    __slots__ = ("children", "ending", "tail")

    def __init__(self) -> None:
        self.children: dict[bytes, _Node[T]] = {}  # literal tokens and "*"
        self.ending: dict[T, None] = {}  # holders of the pattern that ends here
        self.tail: dict[T, None] = {}  # holders of this prefix followed by ">"

    def empty(self) -> bool:
        return not (self.children or self.ending or self.tail)


class PatternIndex(Generic[T]):
    """Which holders (subscribers) have a pattern matching a topic."""

    CACHE_TOPICS = 100_000

    def __init__(self) -> None:
        self.root: _Node[T] = _Node()
        self.holders: dict[bytes, dict[T, None]] = {}  # pattern -> holders
        self._cache: dict[bytes, tuple[T, ...]] = {}

    def __len__(self) -> int:
        """Distinct patterns held."""
        return len(self.holders)

    def __bool__(self) -> bool:
        return bool(self.holders)

    def add(self, pattern: bytes, holder: T) -> None:
        tokens = compile_pattern(pattern)
        self.holders.setdefault(pattern, {})[holder] = None
        node = self.root
        last = len(tokens) - 1
        for i, token in enumerate(tokens):
            if i == last and token == TAIL:
                node.tail[holder] = None
                break
            child = node.children.get(token)
            if child is None:
                child = node.children[token] = _Node()
            node = child
        else:
            node.ending[holder] = None
        self._cache.clear()

    def discard(self, pattern: bytes, holder: T) -> None:
        holders = self.holders.get(pattern)
        if holders is None or holder not in holders:
            return
        del holders[holder]
        if not holders:
            del self.holders[pattern]
        tokens = compile_pattern(pattern)
        path: list[tuple[_Node[T], bytes]] = []
        node = self.root
        last = len(tokens) - 1
        for i, token in enumerate(tokens):
            if i == last and token == TAIL:
                node.tail.pop(holder, None)
                break
            path.append((node, token))
            node = node.children[token]
        else:
            node.ending.pop(holder, None)
        for parent, token in reversed(path):
            child = parent.children[token]
            if not child.empty():
                break
            del parent.children[token]
        self._cache.clear()

    def match(self, topic: bytes) -> tuple[T, ...]:
        """Holders with a pattern matching *topic*, each once."""
        cache = self._cache
        found = cache.get(topic)
        if found is not None:
            return found
        if not self.holders:
            return ()
        result: dict[T, None] = {}
        nodes = [self.root]
        for token in topic.split(b"."):
            following: list[_Node[T]] = []
            for node in nodes:
                if node.tail:
                    result.update(node.tail)
                child = node.children.get(token)
                if child is not None:
                    following.append(child)
                if token != STAR:
                    star = node.children.get(STAR)
                    if star is not None:
                        following.append(star)
            nodes = following
            if not nodes:
                break
        for node in nodes:
            if node.ending:
                result.update(node.ending)
        found = tuple(result)
        if len(cache) >= self.CACHE_TOPICS:
            cache.clear()
        cache[topic] = found
        return found
