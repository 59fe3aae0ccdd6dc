"""A fixed-size set of piece indices, serialised MSB-first (bit i = byte i//8, mask 0x80>>i%8)."""

from __future__ import annotations


class BitfieldError(ValueError):
    pass


class Bitfield:
    __slots__ = ("_bits", "_count", "size")

    def __init__(self, size: int, data: bytes | None = None) -> None:
        if size < 0:
            raise BitfieldError("bitfield size must not be negative")
        self.size = size
        nbytes = (size + 7) // 8
        if data is None:
            self._bits = bytearray(nbytes)
            self._count = 0
            return
        if len(data) != nbytes:
            raise BitfieldError(f"bitfield of {size} bits needs {nbytes} bytes, got {len(data)}")
        if size % 8 and data and data[-1] & (0xFF >> (size % 8)):
            raise BitfieldError("bitfield has bits set beyond its size")
        self._bits = bytearray(data)
        self._count = sum(bin(b).count("1") for b in self._bits)

    @classmethod
    def full(cls, size: int) -> Bitfield:
        b = cls(size)
        for i in range(size):
            b.set(i)
        return b

    def __contains__(self, i: int) -> bool:
        return 0 <= i < self.size and bool(self._bits[i >> 3] & (0x80 >> (i & 7)))

    def set(self, i: int) -> bool:
        """Set bit *i*; True if it was not set before."""
        if not 0 <= i < self.size:
            raise IndexError(f"piece {i} out of range")
        mask = 0x80 >> (i & 7)
        if self._bits[i >> 3] & mask:
            return False
        self._bits[i >> 3] |= mask
        self._count += 1
        return True

    def clear(self, i: int) -> None:
        mask = 0x80 >> (i & 7)
        if self._bits[i >> 3] & mask:
            self._bits[i >> 3] &= ~mask & 0xFF
            self._count -= 1

    def count(self) -> int:
        return self._count

    def complete(self) -> bool:
        return self._count == self.size

    def missing(self) -> list[int]:
        return [i for i in range(self.size) if i not in self]

    def indices(self) -> list[int]:
        return [i for i in range(self.size) if i in self]

    def to_bytes(self) -> bytes:
        return bytes(self._bits)

    def copy(self) -> Bitfield:
        return Bitfield(self.size, bytes(self._bits))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bitfield) and other.size == self.size and other._bits == self._bits

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Bitfield({self._count}/{self.size})"
