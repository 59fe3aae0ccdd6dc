"""How big a value is once written out: the measure of the byte budget.

A value's *expanded size* is about the number of characters of its JSON text (and of its
``inspect`` text): a reference that occurs twice counts twice, because the encoder writes it
twice. That is what makes ``List.duplicate(String.duplicate("a", 1_000_000), 2500)``
2.5 billion characters, although it holds one string and one list.

Containers an evaluation builds are :class:`SizedList`, :class:`SizedDict` and
:class:`SizedTuple`: plain list, dict and tuple values that carry their expanded size and
nesting depth from construction, so measuring a new container costs one look per element,
whatever its elements hold. Containers from elsewhere (the event, helper results) are walked
once, counting shared parts as often as they occur, and give up as soon as the size passes
the limit, so a walk never costs more than the value's own nodes.
"""

from __future__ import annotations

from typing import Any

SCALAR_FUNCTION = 32  # ``#Function<...>``, an Access step


class SizedList(list[Any]):
    __slots__ = ("depth", "size")
    size: int
    depth: int


class SizedDict(dict[Any, Any]):
    __slots__ = ("depth", "size")
    size: int
    depth: int


class SizedTuple(tuple[Any, ...]):
    # tuple subclasses cannot declare non-empty __slots__: these live in the instance dict
    size: int
    depth: int


SIZED = (SizedList, SizedDict, SizedTuple)
_SIZED_TYPES = frozenset(SIZED)
PLAIN = frozenset((list, dict, tuple))


def scalar_size(value: Any) -> int | None:
    """The size of a value that holds no other values, ``None`` for a container."""
    if isinstance(value, str):
        return len(value) + 2
    if value is None or isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return (value.bit_length() * 77 >> 8) + 2  # decimal digits, sign
    if isinstance(value, float):
        return 24
    if isinstance(value, (list, dict, tuple)):
        return None
    name = getattr(value, "name", None)
    return len(name) + 2 if isinstance(name, str) else SCALAR_FUNCTION




def flat_size(items: Any) -> tuple[int, int] | None:
    """Size and depth of a sequence whose elements are scalars or sized containers, in one
    pass; ``None`` when an element needs a walk."""
    total, depth = 2, 0
    for x in items:
        kind = type(x)
        if kind is str:
            total += len(x) + 3
        elif kind is int:
            total += (x.bit_length() * 77 >> 8) + 3
        elif kind in _SIZED_TYPES:
            total += x.size + 1
            if x.depth > depth:
                depth = x.depth
        elif kind is float or kind is bool or x is None:
            total += 25
        elif kind in PLAIN:
            return None
        else:
            total += (scalar_size(x) or 0) + 1
    return total, depth + 1


def flat_size_map(value: dict[Any, Any]) -> tuple[int, int] | None:
    """:func:`flat_size` of a map's keys and values together."""
    total, depth = 2, 0
    for key, x in value.items():
        if type(key) is str:
            total += len(key) + 4
        else:
            key_size = scalar_size(key)
            if key_size is None:
                return None
            total += key_size + 2
        kind = type(x)
        if kind is str:
            total += len(x) + 3
        elif kind is int:
            total += (x.bit_length() * 77 >> 8) + 3
        elif kind in _SIZED_TYPES:
            total += x.size + 1
            if x.depth > depth:
                depth = x.depth
        elif kind is float or kind is bool or x is None:
            total += 25
        elif kind in PLAIN:
            return None
        else:
            total += (scalar_size(x) or 0) + 1
    return total, depth + 1


def _children(value: Any) -> Any:
    if isinstance(value, dict):
        return (x for kv in value.items() for x in kv)
    return value


def measure(value: Any, limit: int, known: dict[int, tuple[Any, int, int]] | None = None) -> tuple[int, int]:
    """``(expanded size, nesting depth)`` of *value*; the size saturates at ``limit + 1``.

    *known* remembers walked plain containers (by id, holding them so ids stay unique) across
    calls; only containers of at least ``REMEMBER`` characters are kept, smaller ones are
    cheaper to walk again than to hold.
    """
    kind = type(value)
    if kind in PLAIN:
        flat = flat_size_map(value) if kind is dict else flat_size(value)
        if flat is not None:
            return min(flat[0], limit + 1), flat[1]
    else:
        size = scalar_size(value)
        if size is not None:
            return size, 0
        if isinstance(value, SIZED):
            return value.size, value.depth
    cap = limit + 1
    seen: dict[int, tuple[int, int]] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if not done:
            if key in seen:
                continue
            if key in on_path:
                raise ValueError("the value contains itself")
            on_path.add(key)
            stack.append((node, True))
            for child in _children(node):
                if scalar_size(child) is None and not isinstance(child, SIZED):
                    ck = id(child)
                    if ck not in seen and not (known is not None and ck in known):
                        stack.append((child, False))
            continue
        on_path.discard(key)
        total, depth = 2, 0
        for child in _children(node):
            cs = scalar_size(child)
            cd = 0
            if cs is None:
                if isinstance(child, SIZED):
                    cs, cd = child.size, child.depth
                else:
                    ck = id(child)
                    if known is not None and ck in known:
                        _, cs, cd = known[ck]
                    else:
                        cs, cd = seen[ck]
            total += cs + 1
            depth = max(depth, cd)
            if total > cap:
                total = cap
                break
        seen[key] = (total, depth + 1)
        if known is not None and total >= REMEMBER and node is not value:
            known[key] = (node, total, depth + 1)
    return seen[id(value)]


REMEMBER = 512


def sized(value: Any, size: int, depth: int) -> Any:
    """*value* (a plain list, dict or tuple) as its sized twin."""
    out: Any
    if isinstance(value, list):
        out = SizedList(value)
    elif isinstance(value, dict):
        out = SizedDict(value)
    else:
        out = SizedTuple(value)
    out.size, out.depth = size, depth
    return out
