"""How many peers have each piece, and the pool of untouched pieces in rarest-first order.

The pool holds the pieces we lack and have not started. They sit in one list per availability
("bucket"), each list in random order, with every piece's slot in its list remembered. So:

- a HAVE moves one piece from bucket ``a`` to ``a + 1``: a swap-remove and an insert at a random
  slot, O(1), and the random order inside each bucket stays a uniform shuffle;
- the rarest-first walk reads bucket 0, 1, 2 ... and stops as soon as the caller has enough;
- seeds (HAVE_ALL, web seeds) are one counter added to every piece, since they change no order.

A bitfield that would move a large share of the pool marks the order *dirty* instead: counts are
updated, and the buckets are rebuilt once, in O(pieces), before the next walk (libtorrent's
piece_picker makes the same trade with its ``m_dirty`` flag). A burst of 200 peers connecting
then costs one rebuild, not 200 x pieces single moves.
"""

from __future__ import annotations

import random
import re
import sys
from array import array
from collections.abc import Iterable, Iterator

_NONZERO = re.compile(rb"[^\x00]")
_BIT_OFFSETS = tuple(tuple(bit for bit in range(8) if byte & (0x80 >> bit)) for byte in range(256))


# Spreading packed bits to one byte per piece, all in C: bit j of every byte, via translate.
_BIT_PLANES = tuple(bytes((byte >> (7 - bit)) & 1 for byte in range(256)) for bit in range(8))
# Below this many set bits, per-piece updates beat the whole-array arithmetic.
_VECTOR_MIN = 4096


def iter_bits(packed: bytes | bytearray) -> Iterator[int]:
    """Indices of the set bits of a wire-order bitfield; empty bytes are skipped in C."""
    offsets = _BIT_OFFSETS
    for match in _NONZERO.finditer(packed):
        position = match.start()
        base = position << 3
        for bit in offsets[packed[position]]:
            yield base + bit


def popcount(packed: bytes | bytearray) -> int:
    return int.from_bytes(packed, "big").bit_count()


class Availability:
    """Per-piece peer counts (plus a seed counter) and the ordered pool of pickable pieces."""

    __slots__ = ("_counts", "_seeds", "_rng", "_random", "_order", "_in_pool", "_size", "_buckets", "_slot", "_dirty", "_low")

    def __init__(self, num_pieces: int, *, rng: random.Random, pool: Iterable[int] = ()) -> None:
        self._counts = array("I", bytes(4 * num_pieces)) if array("I").itemsize == 4 else array("L", [0] * num_pieces)
        self._seeds = 0
        self._rng = rng
        self._random = rng.random
        # A fixed random priority per piece (the order in which a rebuild fills each bucket) and
        # every pool piece's slot in its bucket: ~44 bytes a piece, made by the first rebuild
        # that needs them. A complete torrent never walks its pool, so a thousand seeding
        # packages of a thousand pieces each do not hold 40 MiB of them.
        self._order: list[int] | None = None
        self._slot: list[int] | None = None
        self._in_pool = bytearray(num_pieces)
        for index in pool:
            self._in_pool[index] = 1
        self._size = self._in_pool.count(1)
        self._buckets: list[list[int]] = [[]]
        self._dirty = True
        self._low = 0  # no piece in a bucket below this

    # -- counts ---------------------------------------------------------------------------

    def __getitem__(self, index: int) -> int:
        """Peers that have piece ``index``, seeds included."""
        return self._counts[index] + self._seeds

    def peer_count(self, index: int) -> int:
        """Peers with a bitfield (not seeds) that have piece ``index``: its bucket."""
        return self._counts[index]

    @property
    def seeds(self) -> int:
        return self._seeds

    def add_seed(self) -> None:
        self._seeds += 1

    def remove_seed(self) -> None:
        if self._seeds <= 0:
            raise ValueError("no seed to remove")
        self._seeds -= 1

    def increment(self, index: int) -> None:
        count = self._counts[index]
        self._counts[index] = count + 1
        if self._in_pool[index] and not self._dirty:
            self._unlink(index, count)
            self._link(index, count + 1)

    def decrement(self, index: int) -> None:
        count = self._counts[index]
        if count <= 0:
            raise ValueError(f"piece {index} has no peer to remove")
        self._counts[index] = count - 1
        if self._in_pool[index] and not self._dirty:
            self._unlink(index, count)
            self._link(index, count - 1)

    def add_bits(self, packed: bytes | bytearray, count: int) -> None:
        """A peer's bitfield arrived (``count`` set bits): O(count)."""
        self._bulk(packed, count, 1)

    def remove_bits(self, packed: bytes | bytearray, count: int) -> None:
        """A peer with this bitfield left: O(count)."""
        self._bulk(packed, count, -1)

    def _bulk(self, packed: bytes | bytearray, count: int, delta: int) -> None:
        if not self._dirty and count > 256 and count * 8 > self._size:
            self._dirty = True
        if self._dirty and count >= _VECTOR_MIN:
            self._vector_add(packed, delta)
            return
        if self._dirty:
            counts = self._counts
            offsets = _BIT_OFFSETS
            for match in _NONZERO.finditer(packed):
                position = match.start()
                base = position << 3
                for bit in offsets[packed[position]]:
                    counts[base + bit] += delta
            return
        step = self.increment if delta > 0 else self.decrement
        for index in iter_bits(packed):
            step(index)

    def _vector_add(self, packed: bytes | bytearray, delta: int) -> None:
        """Add (or subtract) a whole bitfield to the counts as one big-integer operation.

        The counts array is read as one integer of fixed-width fields and the bitfield spread
        to the same layout (a 1 in the low byte of each set piece's field). Fields never go
        below zero nor overflow, so no carry crosses from one piece to the next.
        """
        n = len(self._counts)
        width = self._counts.itemsize
        spread = bytearray(8 * len(packed))
        for bit, plane in enumerate(_BIT_PLANES):
            spread[bit::8] = packed.translate(plane)
        fields = bytearray(width * n)
        fields[0 if sys.byteorder == "little" else width - 1 :: width] = spread[:n]
        total = int.from_bytes(self._counts.tobytes(), sys.byteorder)
        addend = int.from_bytes(fields, sys.byteorder)
        total = total + addend if delta > 0 else total - addend
        counts = array(self._counts.typecode)
        counts.frombytes(total.to_bytes(width * n, sys.byteorder))
        self._counts = counts

    # -- the pool -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._size

    def __contains__(self, index: int) -> bool:
        return bool(self._in_pool[index])

    def add(self, index: int) -> None:
        """Put a piece (back) into the pool at a random place among its equals."""
        if self._in_pool[index]:
            return
        self._in_pool[index] = 1
        self._size += 1
        if not self._dirty:
            self._link(index, self._counts[index])

    def discard(self, index: int) -> None:
        """Take a piece out of the pool (started, or we have it)."""
        if not self._in_pool[index]:
            return
        self._in_pool[index] = 0
        self._size -= 1
        if not self._dirty:
            self._unlink(index, self._counts[index])

    def rarest(self, *, skip_unshared: bool = False) -> Iterator[int]:
        """Pool pieces, rarest first, ties in random order. Do not change the pool while walking.

        ``skip_unshared`` leaves out bucket 0 (pieces only seeds have): a peer with a bitfield
        cannot have any of them, so walking them would be wasted work.
        """
        self._rebuild()
        buckets = self._buckets
        low = self._low
        while low < len(buckets) and not buckets[low]:
            low += 1
        self._low = low
        for count in range(max(low, 1 if skip_unshared else 0), len(buckets)):
            yield from buckets[count]

    def sort_key(self, index: int) -> tuple[int, int]:
        """The pool order as a key, for callers that gather candidates another way."""
        self._rebuild()
        assert self._slot is not None
        return self._counts[index], self._slot[index]

    def check(self) -> None:
        """Assert the internal invariants (tests call this; it is O(pieces))."""
        if self._dirty:
            return
        seen = 0
        slots = self._slot
        for count, bucket in enumerate(self._buckets):
            for slot, index in enumerate(bucket):
                assert self._in_pool[index], f"piece {index} in a bucket but not in the pool"
                assert self._counts[index] == count, f"piece {index} in bucket {count}, count {self._counts[index]}"
                assert slots is not None, f"piece {index} in a bucket but the pool has no order"
                assert slots[index] == slot, f"piece {index} slot {slots[index]} != {slot}"
            seen += len(bucket)
        assert seen == self._size == self._in_pool.count(1), "pool size mismatch"

    # -- internals ------------------------------------------------------------------------

    def _unlink(self, index: int, count: int) -> None:
        bucket = self._buckets[count]
        slots = self._slot
        assert slots is not None  # not dirty: rebuilt
        slot = slots[index]
        last = bucket.pop()
        if last != index:
            bucket[slot] = last
            slots[last] = slot
        slots[index] = -1

    def _link(self, index: int, count: int) -> None:
        slots = self._slot
        assert slots is not None  # not dirty: rebuilt
        buckets = self._buckets
        while len(buckets) <= count:
            buckets.append([])
        bucket = buckets[count]
        size = len(bucket)
        if count < self._low:
            self._low = count
        slot = int(self._random() * (size + 1))
        if slot == size:
            bucket.append(index)
        else:
            other = bucket[slot]
            bucket.append(other)
            slots[other] = size
            bucket[slot] = index
        slots[index] = slot

    def _rebuild(self) -> None:
        if not self._dirty:
            return
        counts = self._counts
        in_pool = self._in_pool
        if self._slot is None:
            self._slot = [-1] * len(counts)
        slot = self._slot
        top = max(counts, default=0)
        buckets: list[list[int]] = [[] for _ in range(top + 1)]
        if self._size:
            if self._order is None:
                self._order = list(range(len(counts)))
                self._rng.shuffle(self._order)
            for index in self._order:
                if in_pool[index]:
                    bucket = buckets[counts[index]]
                    slot[index] = len(bucket)
                    bucket.append(index)
        self._buckets = buckets
        self._dirty = False
        self._low = 0
