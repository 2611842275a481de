"""Scatter reads: a fast peer's blocks go from the socket straight into their piece buffers.

The plain receive path reads into the codec's buffer and copies every 16 KiB block into its
piece buffer: a second pass over every byte, about a quarter of the leecher's main thread at
loopback speed. A peer answers our requests in the order we sent them, so the next bytes on a
busy connection are predictable: 13 header bytes, then the block we asked for first, and so on.
``recvmsg_into`` fills a list of buffers in order, so one read can put each header in a small
scratch area and each block's data directly in its slot of the piece buffer.

Whatever does not match the prediction costs a copy, never correctness: a header that is not
the expected one, a message cut by the end of a read, anything after the planned blocks all go
to the codec as plain stream bytes, and the codec parses them as usual. The slots come from
``Torrent.receive_slots``: blocks requested from this peer alone and not received, so a wrong
guess can only scribble on bytes that nobody else writes and that are overwritten when the real
block arrives, never on a piece being hashed.

Reads are coalesced on fast links: after a read that found less than a whole plan waiting,
the reader stops watching the socket for ``COALESCE_SECONDS`` so the next read finds about a
plan's worth. Much of a read's cost is per read, not per byte (planning the slots, checking
the headers, settling the blocks, the refill): at loopback speed this halves the reads per
GiB and cuts the leecher's CPU by about 8 % (docs/benchmark-engine.md). The pause is a couple
of milliseconds of data (the kernel's receive buffer holds it; the peer has a pipeline of
requests to answer), and it only follows reads of at least ``FAST_READ`` bytes, so slow links
and small messages never wait on it.

POSIX only (``recvmsg_into``); the reader uses a duplicate of the socket's descriptor while the
transport's own reading is paused, and the transport keeps writing and closing.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from typing import TYPE_CHECKING, Protocol

from p2pdist.engine.fastpath import key_bytes, total_length
from p2pdist.errors import LocalError, RemoteError
from p2pdist.metainfo.layout import BLOCK_SIZE
from p2pdist.wire.codec import PeerWire

if TYPE_CHECKING:
    from p2pdist.engine.peer import PeerConnection

SUPPORTED = hasattr(socket.socket, "recvmsg_into") and sys.platform != "win32"
PLAN_BLOCKS = 128  # up to 2 MiB per read: what arrives in COALESCE_SECONDS at loopback speed
FAST_READ = 64 * 1024  # plan (and coalesce) only after reads this large: slow links read less
COALESCE_SECONDS = 0.002  # see the module docstring
_TAIL = 4096  # room after the planned blocks for small messages (have, keep-alive)
_HEADER = 13
_READS_PER_EVENT = 8
_MAX_BACKOFF = 1024
_TRUST = 8


class SlotSource(Protocol):
    def receive_slots(self, conn: PeerConnection, limit: int) -> tuple[list[tuple[int, int, int]], list[memoryview]]: ...

    def on_placed(self, conn: PeerConnection, keys: list[tuple[int, int, int]]) -> None: ...


class DirectReader:
    """Reads one connection's bytes with scatter reads; see the module docstring."""

    def __init__(self, conn: PeerConnection, sock: socket.socket, owner: SlotSource) -> None:
        self.conn = conn
        self.owner = owner
        self.loop = asyncio.get_running_loop()
        fd = os.dup(sock.fileno())
        try:
            self._sock = socket.socket(fileno=fd)
            self._sock.setblocking(False)
        except OSError:
            os.close(fd)
            raise
        self._fd = self._sock.fileno()
        self._headers = bytearray(_HEADER * PLAN_BLOCKS)
        headers = memoryview(self._headers)
        self._header_slots = [headers[n * _HEADER : (n + 1) * _HEADER] for n in range(PLAN_BLOCKS)]
        self._tail_view = memoryview(bytearray(_TAIL))
        self._plan_next = True
        # A peer that does not answer in order (libtorrent sends blocks as its disk reads
        # finish; a downloading peer sends a `have` per piece) makes planned reads cost a copy
        # more than plain ones: after a wrong guess, read plainly for a while, twice as long
        # after each, up to _MAX_BACKOFF reads; _TRUST right guesses in a row forgive.
        self._backoff = 0
        self._plain_left = 0
        self._streak = 0
        self.reading = False
        self._coalescing: asyncio.TimerHandle | None = None
        self.placed_bytes = 0  # for tests and diagnostics
        self.planned_reads = 0
        self.plain_reads = 0
        self.coalesced = 0

    def start(self) -> None:
        self._cancel_coalescing()
        if not self.reading:
            self.reading = True
            self.loop.add_reader(self._fd, self._on_readable)

    def stop(self) -> None:
        """Stop watching the socket (rate limiting, closing): a coalescing pause ends too, so
        only ``start`` resumes."""
        self._cancel_coalescing()
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self._fd)

    def close(self) -> None:
        self.stop()
        self._sock.close()

    @property
    def coalescing(self) -> bool:
        """True while reads pause for more data to gather (see the module docstring)."""
        return self._coalescing is not None

    def _coalesce(self) -> None:
        self.coalesced += 1
        self.stop()
        self._coalescing = self.loop.call_later(COALESCE_SECONDS, self._end_coalescing)

    def _end_coalescing(self) -> None:
        self._coalescing = None
        if not self.conn.closed:
            self.start()

    def _cancel_coalescing(self) -> None:
        if self._coalescing is not None:
            self._coalescing.cancel()
            self._coalescing = None

    # -- one readable event ------------------------------------------------------------------

    def _on_readable(self) -> None:
        conn = self.conn
        if conn.closed:
            self.stop()
            return
        try:
            # Like the transports: while reads come back full there is more waiting, so read
            # again now instead of going back to epoll for every read.
            for _ in range(_READS_PER_EVENT):
                full = None
                if self._plain_left:
                    self._plain_left -= 1
                elif self._plan_next:
                    full = self._read_planned()
                if full is None:
                    full = self._read_plain()
                if not full or conn.closed or not self.reading:
                    if not full and self._plan_next and self.reading and not conn.closed:
                        self._coalesce()  # a fast link: let the next read find a whole plan
                    return
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            conn.close(f"connection lost: {exc}")
        except (RemoteError, LocalError) as exc:
            conn.fail(exc)

    def _read_plain(self) -> bool:
        """Into the codec's buffer, exactly as the transport would have read; True when the
        read filled the buffer (more is probably waiting)."""
        conn = self.conn
        buffer = conn.get_buffer(-1)
        if conn.closed:
            return False
        nbytes = self._sock.recv_into(buffer)
        self.plain_reads += 1
        if nbytes == 0:
            conn.close("peer closed the connection")
            return False
        self._plan_next = nbytes >= FAST_READ
        conn.buffer_updated(nbytes)
        return nbytes == len(buffer)

    def _read_planned(self) -> bool | None:
        """One scatter read when the codec is between messages (or holds the start of a block
        we can finish in place): True when it filled every buffer. None when there is nothing
        to plan (read plainly instead)."""
        conn = self.conn
        wire: PeerWire = conn.wire
        first: tuple[tuple[int, int, int], memoryview, int] | None = None
        if not wire.placing:
            partial = wire.partial_piece()
            if partial is None:
                return None
            key, received = partial
            keys, slots = self.owner.receive_slots(conn, PLAN_BLOCKS + 1)
            if not keys or keys[0] != key:
                return None
            slot = slots[0]
            done = len(received)
            slot[:done] = received  # at most one block, once per read; the codec keeps its copy
            first = (key, slot, done)
            del keys[0], slots[0]
        else:
            keys, slots = self.owner.receive_slots(conn, PLAN_BLOCKS)
            if not keys:
                return None
        # [rest of the first block], header, slot, header, slot, ..., tail: built by slice
        # assignment, not a Python step per block.
        count = len(keys)
        pairs: list[memoryview] = [self._tail_view] * (2 * count)
        pairs[0::2] = self._header_slots[:count]
        pairs[1::2] = slots
        buffers = [first[1][first[2] :], *pairs, self._tail_view] if first is not None else [*pairs, self._tail_view]
        nbytes = self._sock.recvmsg_into(buffers)[0]
        self.planned_reads += 1
        if nbytes == 0:
            conn.close("peer closed the connection")
            return False
        self._plan_next = nbytes >= FAST_READ
        self._settle(nbytes, first, keys, slots, buffers)
        return nbytes == total_length(buffers)

    def _settle(
        self,
        nbytes: int,
        first: tuple[tuple[int, int, int], memoryview, int] | None,
        keys: list[tuple[int, int, int]],
        slots: list[memoryview],
        buffers: list[memoryview],
    ) -> None:
        """Hand over the blocks that arrived whole and as predicted; everything else goes to the
        codec as stream bytes, in stream order."""
        wire = self.conn.wire
        placed: list[tuple[int, int, int]] = []  # keys of the blocks now in their slots
        left = nbytes
        position = 0  # index into buffers of the first one not settled
        if first is not None:
            key, slot, done = first
            if left < len(slot) - done:
                # Still not whole: the codec holds its start and takes the rest as stream bytes.
                wire.receive_data(slot[done : done + left])
                self._finish(placed, nbytes)
                return
            left -= len(slot) - done
            wire.take_partial(key)
            placed.append(key)
            position = 1
        # How many planned messages arrived whole (all full blocks but, at most, the torrent's
        # last one), then how many of those are the ones expected: all, unless the peer answered
        # out of order or sent something else.
        if total_length(slots) == BLOCK_SIZE * len(slots):
            whole = min(len(slots), left // (_HEADER + BLOCK_SIZE))
            left -= whole * (_HEADER + BLOCK_SIZE)
        else:
            whole = 0
            for slot in slots:
                if left < _HEADER + len(slot):
                    break
                left -= _HEADER + len(slot)
                whole += 1
        expected = wire.expected_headers(keys[:whole])
        matched = whole
        if self._headers[: len(expected)] != expected:
            matched = _first_difference(self._headers, expected) // _HEADER
            left += total_length(slots[matched:whole]) + _HEADER * (whole - matched)
            self._backoff = min(2 * self._backoff or 1, _MAX_BACKOFF)
            self._plain_left = self._backoff
            self._streak = 0
        elif whole:
            self._streak += 1
            if self._streak >= _TRUST:
                self._backoff = 0
        taken = keys[:matched]
        wire.place_many(taken)
        placed.extend(taken)
        position += 2 * matched
        if left:
            # The rest of the read, from the first buffer not settled on, is plain stream.
            for buffer in buffers[position:]:
                take = min(left, len(buffer))
                if take:
                    wire.receive_data(buffer[:take])
                    left -= take
                if not left:
                    break
        self._finish(placed, nbytes)

    def _finish(self, placed: list[tuple[int, int, int]], nbytes: int) -> None:
        conn = self.conn
        if placed:
            self.placed_bytes += key_bytes(placed)
            conn.placed(placed)
        if not conn.closed:
            conn.process_events(nbytes)


def _first_difference(got: bytes | bytearray, expected: bytes) -> int:
    """Index of the first byte where ``got`` differs from ``expected`` (they do differ)."""
    return next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
