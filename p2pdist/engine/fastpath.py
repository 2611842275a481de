"""Per-block loops of the receive path, run in C.

A GiB is 65 536 blocks. A Python loop over them costs a bytecode dispatch, a name lookup and a
frame step per block; the same loop written as ``map`` over a bound method or an ``operator``
function runs inside the interpreter's C code with none of those. Each helper here is such a
one-liner with a name saying what it computes, so the callers read as what they mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Sized
from itertools import compress, repeat
from operator import floordiv, itemgetter

from p2pdist.metainfo import BLOCK_SIZE

Key = tuple[int, int, int]  # (index, begin, length) of a block, as the codec keys it

_length = itemgetter(2)
_begin = itemgetter(1)


def block_views(buffer: bytearray) -> list[memoryview]:
    """A view of each 16 KiB block of ``buffer``, in order (the last may be shorter).

    Saves a Python step per block when a piece buffer is first used for scatter reads: the
    slices are made by ``map(view.__getitem__, ...)`` over C-built ``slice`` objects."""
    view = memoryview(buffer)
    starts = range(0, len(buffer), BLOCK_SIZE)
    return list(map(view.__getitem__, map(slice, starts, map(BLOCK_SIZE.__add__, starts))))


def slots_of(views: Sequence[memoryview], keys: Iterable[Key]) -> Iterable[memoryview]:
    """The views of the blocks ``keys`` name within one piece (``begin // BLOCK_SIZE``).

    Saves a Python step per planned block on every scatter read (up to 128 a read): the
    division and the lookup run as nested ``map`` in C."""
    return map(views.__getitem__, map(floordiv, map(_begin, keys), repeat(BLOCK_SIZE)))


def key_bytes(keys: Iterable[Key]) -> int:
    """Bytes the blocks ``keys`` hold (the sum of their lengths), without a Python step per key."""
    return sum(map(_length, keys))


def taken_bytes(keys: Iterable[Key], answers: Iterable[object]) -> int:
    """Bytes of the blocks whose picker answer is not None (taken), without a step per key:
    ``compress`` keeps the keys whose answer is truthy, and every answer but None is."""
    return sum(map(_length, compress(keys, answers)))


def total_length(buffers: Iterable[Sized]) -> int:
    """Bytes the buffers of one scatter read hold, summed by ``map(len)`` in C."""
    return sum(map(len, buffers))

