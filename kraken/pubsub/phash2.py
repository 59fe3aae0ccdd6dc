"""``erlang:phash2/2`` for binaries: which router shard a topic belongs to.

The original server assigns topic ``T`` to shard ``phash2(T, N)``; since a published message
reaches a subscriber as one record per shard, the shard of each topic shows on the wire.
The hash is Bob Jenkins' lookup2 over the raw bytes with the initial value 0x08D12E65.
"""

from __future__ import annotations

_MASK = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9
_INITIAL = 0x08D12E65


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    a = (a - b - c) & _MASK
    a ^= c >> 13
    b = (b - c - a) & _MASK
    b ^= (a << 8) & _MASK
    c = (c - a - b) & _MASK
    c ^= b >> 13
    a = (a - b - c) & _MASK
    a ^= c >> 12
    b = (b - c - a) & _MASK
    b ^= (a << 16) & _MASK
    c = (c - a - b) & _MASK
    c ^= b >> 5
    a = (a - b - c) & _MASK
    a ^= c >> 3
    b = (b - c - a) & _MASK
    b ^= (a << 10) & _MASK
    c = (c - a - b) & _MASK
    c ^= b >> 15
    return a, b, c


def hash32(data: bytes) -> int:
    """The full 32-bit hash ERTS computes for a binary (before the range is applied)."""
    length = len(data)
    if length == 0:
        return _INITIAL
    a = b = _GOLDEN
    c = _INITIAL
    full = length - length % 12
    for i in range(0, full, 12):
        a = (a + int.from_bytes(data[i : i + 4], "little")) & _MASK
        b = (b + int.from_bytes(data[i + 4 : i + 8], "little")) & _MASK
        c = (c + int.from_bytes(data[i + 8 : i + 12], "little")) & _MASK
        a, b, c = _mix(a, b, c)
    c = (c + length) & _MASK
    tail = data[full:]
    a = (a + int.from_bytes(tail[0:4], "little")) & _MASK
    b = (b + int.from_bytes(tail[4:8], "little")) & _MASK
    # The low byte of c already holds the length, so the last tail bytes start at bit 8.
    c = (c + (int.from_bytes(tail[8:11], "little") << 8)) & _MASK
    _, _, c = _mix(a, b, c)
    return c


def phash2(data: bytes, range_: int = 1 << 27) -> int:
    """``erlang:phash2(Data, Range)``; without *range_*, ``phash2(Data)`` (27 bits)."""
    if range_ == 1 << 27:
        return hash32(data) & ((1 << 27) - 1)
    return hash32(data) % range_


def shard_of(topic: bytes, shards: int) -> int:
    """The router shard of *topic* among *shards* (the router caches it per topic)."""
    return hash32(topic) % shards
