"""A compact, fixed-length bitfield in BitTorrent's bit order.

Bit 0 is the high bit of byte 0, as on the wire (BEP 3), so ``to_bytes`` is the payload of a
``bitfield`` message with no conversion. The wire codec, the piece picker, storage resume data
and the tracker all share this one type.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from p2pdist.errors import RemoteError

_POPCOUNT = bytes(bin(i).count("1") for i in range(256))


class Bitfield:
    """``length`` bits, all clear unless given; mutable, with a running count of set bits."""

    __slots__ = ("_bits", "_length", "_count")

    def __init__(self, length: int, set_bits: Iterable[int] = ()) -> None:
        if length < 0:
            raise ValueError("bitfield length must be >= 0")
        self._length = length
        self._bits = bytearray((length + 7) // 8)
        self._count = 0
        for index in set_bits:
            self.set(index)

    @classmethod
    def full(cls, length: int) -> Bitfield:
        """Every bit set: a seed's bitfield."""
        field = cls(length)
        field._bits[:] = b"\xff" * len(field._bits)
        if length % 8:
            field._bits[-1] = (0xFF << (8 - length % 8)) & 0xFF
        field._count = length
        return field

    @classmethod
    def from_bytes(cls, data: bytes, length: int) -> Bitfield:
        """Parse a wire bitfield; wrong size or set spare bits are the sender's fault."""
        if length < 0:
            raise ValueError("bitfield length must be >= 0")
        data = bytes(data)  # a memoryview from a receive buffer has no translate()
        expected = (length + 7) // 8
        if len(data) != expected:
            raise RemoteError(f"bitfield has {len(data)} bytes, expected {expected} for {length} pieces")
        spare = (8 - length % 8) % 8
        if spare and data[-1] & ((1 << spare) - 1):
            raise RemoteError("bitfield has spare bits set past the last piece")
        field = cls(length)
        field._bits[:] = data
        field._count = sum(data.translate(_POPCOUNT))
        return field

    def to_bytes(self) -> bytes:
        return bytes(self._bits)

    def copy(self) -> Bitfield:
        clone = Bitfield(0)
        clone._length = self._length
        clone._bits = bytearray(self._bits)
        clone._count = self._count
        return clone

    def _check(self, index: int) -> None:
        if not 0 <= index < self._length:
            raise IndexError(f"bit {index} outside bitfield of {self._length}")

    def __getitem__(self, index: int) -> bool:
        self._check(index)
        return bool(self._bits[index >> 3] & (0x80 >> (index & 7)))

    def set(self, index: int) -> bool:
        """Set a bit; returns True when it was clear before."""
        self._check(index)
        mask = 0x80 >> (index & 7)
        byte = self._bits[index >> 3]
        if byte & mask:
            return False
        self._bits[index >> 3] = byte | mask
        self._count += 1
        return True

    def clear(self, index: int) -> bool:
        """Clear a bit; returns True when it was set before."""
        self._check(index)
        mask = 0x80 >> (index & 7)
        byte = self._bits[index >> 3]
        if not byte & mask:
            return False
        self._bits[index >> 3] = byte & ~mask
        self._count -= 1
        return True

    def __len__(self) -> int:
        return self._length

    @property
    def count(self) -> int:
        """Number of set bits, kept current on every change (no scan)."""
        return self._count

    def all(self) -> bool:
        return self._count == self._length

    def any(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[int]:
        """Indices of the set bits, ascending; skips empty bytes quickly."""
        for byte_index, byte in enumerate(self._bits):
            if byte:
                base = byte_index << 3
                for bit in range(8):
                    if byte & (0x80 >> bit):
                        yield base + bit

    def missing(self) -> Iterator[int]:
        """Indices of the clear bits, ascending."""
        for byte_index, byte in enumerate(self._bits):
            if byte != 0xFF:
                base = byte_index << 3
                for bit in range(8):
                    index = base + bit
                    if index < self._length and not byte & (0x80 >> bit):
                        yield index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bitfield) and self._length == other._length and self._bits == other._bits

    def __repr__(self) -> str:
        return f"Bitfield({self._length}, count={self._count})"
