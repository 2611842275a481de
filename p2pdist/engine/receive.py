"""The receive hot path: blocks into piece buffers, whole pieces to storage.

65 536 blocks per GiB. The codec hands over a socket read's piece messages as one run; the
picker takes the run in one call (``Requests.take``) and each block is copied into its
piece's assembly buffer. A fast peer's driver reads blocks straight into their slots instead
(``receive_slots``, engine/direct.py) and reports them placed: the same settlement without
the copy. Counters, snub state, slow start and the refill are settled once per run, not per
block. When the picker says a piece is whole, its buffer goes to storage, which hashes and
writes it in one worker-thread hop; ``Settlement`` takes it from there.

Buffers are pooled (up to ``POOL_BYTES`` of spare megabyte buffers: fresh ones cost page
faults), and so are their block views for scatter reads (made once per buffer, keyed by
``id(buffer)``; the views keep the buffer alive, so the id cannot be reused while its entry
exists).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Hashable, Sequence
from itertools import groupby
from operator import itemgetter
from typing import TYPE_CHECKING

from p2pdist.engine.fastpath import Key, block_views, key_bytes, slots_of, taken_bytes
from p2pdist.engine.peer import PeerConnection
from p2pdist.engine.ratelimit import Throttle
from p2pdist.engine.requests import Answer
from p2pdist.piece_picker.picker import TAKEN
from p2pdist.storage.base import StorageError

if TYPE_CHECKING:
    from p2pdist.engine.torrent import Torrent

log = logging.getLogger("p2pdist.torrent")

POOL_BYTES = 32 << 20
_index = itemgetter(0)


class Receiver:
    """One torrent's piece assembly: buffers, block views, and the blocks that fill them."""

    __slots__ = ("torrent", "throttle", "partial", "views", "pool")

    def __init__(self, torrent: Torrent, throttle: Throttle) -> None:
        self.torrent = torrent
        self.throttle = throttle
        self.partial: dict[int, bytearray] = {}
        self.views: dict[int, list[memoryview]] = {}  # id(buffer) -> its block views
        self.pool: list[bytearray] = []

    def on_blocks(self, conn: PeerConnection, run: Sequence[tuple[int, int, memoryview]]) -> None:
        """Blocks from a peer, as the codec's borrowed run of ``(index, begin, data)``."""
        self.received(conn, len(run), *self.take_run(conn, run))

    def on_placed(self, conn: PeerConnection, keys: list[Key]) -> None:
        """Blocks the driver read straight into the slots ``receive_slots`` gave it: the same
        settlement as ``on_blocks``, without the copy and, through ``take_placed``, without a
        ledger step per block."""
        answers = self.torrent.requests.take_placed(conn, keys)
        total = key_bytes(keys)
        got = taken_bytes(keys, answers)
        for position in [n for n, answer in enumerate(answers) if answer is not TAKEN and answer is not None]:
            index = keys[position][0]
            buffer = self.partial.get(index)
            if buffer is None:  # cannot happen: its slot came from this piece's buffer
                log.error("%s: piece %d lost its buffer while blocks were read into it", self.torrent.info.name, index)
                buffer = self.start_piece(index)
            self.settle_block(index, buffer, answers[position])
        self.received(conn, len(keys), got, total - got)

    def receive_slots(self, conn: PeerConnection, limit: int) -> tuple[list[Key], list[memoryview]]:
        """Where the next blocks ``conn`` sends belong, in the order we requested them, so its
        driver can read them straight into their piece buffers: their keys and, in the same
        order, their slots.

        Only blocks requested from this peer alone and not received yet (``sole_keys``):
        nothing else may write those bytes, and their piece cannot be complete, so no buffer
        being hashed or written is ever a target.
        """
        torrent = self.torrent
        if torrent.picker is None or not torrent.downloading or conn.closed:
            return [], []
        keys = torrent.requests.sole_keys(conn, limit)
        slots: list[memoryview] = []
        for index, run in groupby(keys, key=_index):
            slots += slots_of(self.block_views(index), run)
        return keys, slots

    def block_views(self, index: int) -> list[memoryview]:
        """A view of each block of piece ``index``'s buffer (see the module docstring). An
        entry goes when ``recycle`` does not keep its buffer, and with the torrent."""
        buffer = self.partial.get(index)
        if buffer is None:
            buffer = self.start_piece(index)
        views = self.views.get(id(buffer))
        if views is None:
            views = self.views[id(buffer)] = block_views(buffer)
        return views

    def received(self, conn: PeerConnection, count: int, got: int, wasted: int) -> None:
        """Counters, snub state, rate limit, slow start and the refill, once per run."""
        torrent = self.torrent
        total = got + wasted
        conn.last_block = conn.last_received
        conn.snubbed = False
        conn.download_meter.total += total
        torrent.download_meter.total += total
        torrent.bytes_from_peers += got
        torrent.bytes_wasted += wasted
        if self.throttle.limited:
            self._throttle(conn, total)
        conn.blocks_since_growth += count
        if conn.blocks_since_growth >= conn.queue_target or len(conn.wire.requests_out) <= conn.refill_at:
            torrent.requests.after_blocks(conn)  # slow start or the refill is due

    def take_run(self, source: Hashable, run: Sequence[tuple[int, int, bytes | memoryview]]) -> tuple[int, int]:
        """Put the blocks of a run from one source (peer or web seed) into their pieces: one
        picker call, one copy per block. Returns (bytes taken, bytes not wanted)."""
        answers = self.torrent.requests.take(source, run)
        partial = self.partial
        got = wasted = 0
        current, buffer = -1, bytearray()
        for (index, begin, data), taken in zip(run, answers):
            size = len(data)
            if taken is None:
                wasted += size  # a late duplicate (endgame) or a piece already verified
                continue
            got += size
            if index != current:
                current = index
                found = partial.get(index)
                buffer = found if found is not None else self.start_piece(index)
            buffer[begin : begin + size] = data
            if taken is not TAKEN:
                self.settle_block(index, buffer, taken)
                current = -1  # a whole piece leaves the assembly; look up the next afresh
        return got, wasted

    def start_piece(self, index: int) -> bytearray:
        buffer = self.partial[index] = self._new_buffer(index)
        torrent = self.torrent
        if torrent.first_block_at is None:
            torrent.first_block_at = torrent.clock()
        return buffer

    def settle_block(self, index: int, buffer: bytearray, taken: Answer) -> None:
        """Cancel the block's duplicate requests (endgame); verify the piece once it is whole."""
        assert taken is not None
        done, cancels = taken
        if cancels:
            self.torrent.requests.cancel_duplicates(cancels)
        if done:
            del self.partial[index]
            settlement = self.torrent.settlement
            try:
                stored = self.torrent.storage.submit_piece(index, buffer)
            except StorageError as exc:
                self.recycle(buffer)
                settlement.storage_failed(index, exc)
                return
            stored.add_done_callback(functools.partial(settlement.piece_stored, index, buffer))

    def _new_buffer(self, index: int) -> bytearray:
        size = self.torrent.layout.piece_size(index)
        if size == self.torrent.info.piece_length and self.pool:
            return self.pool.pop()
        return bytearray(size)

    def recycle(self, buffer: bytearray) -> None:
        """Every buffer the torrent is done with comes here: back to the pool, or forgotten
        (with its block views) so it can be freed. Enough spare buffers for the pieces waiting
        on the hash thread at full speed, so steady state allocates nothing; a stopped torrent
        keeps none."""
        if not self.torrent.stopping and len(buffer) == self.torrent.info.piece_length and len(self.pool) * len(buffer) < POOL_BYTES:
            self.pool.append(buffer)
        else:
            self.views.pop(id(buffer), None)

    def clear(self) -> None:
        self.views.clear()
        self.pool.clear()

    def _throttle(self, conn: PeerConnection, size: int) -> None:
        throttle = self.throttle
        throttle.charge(size)
        delay = throttle.delay()
        if delay > 0 and not conn.read_paused:
            conn.pause_reading()
            asyncio.get_running_loop().call_later(delay, conn.resume_reading)
