"""Serving a peer's requests: the upload queue, the upload loop and its rate limit.

Requests arrive as runs (the codec's ``RequestRun``) and join the peer's queue; one task per
uploading peer slices up to ``UPLOAD_BATCH`` blocks from pieces in memory without copying and
writes them, headers framed by the codec, in one call. A piece that needs a disk read ends the
batch and is awaited, which brings the whole piece into the cache for the requests that follow.
Under a rate limit a batch holds about one second of the limit, so the peer sees blocks
arrive steadily.

What one peer can make us hold is bounded: its requests (the codec's caps), and the queue,
compacted to the requests still owed when repetitions or cancels pile up in it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from p2pdist.engine.peer import PeerConnection
from p2pdist.engine.ratelimit import Throttle
from p2pdist.metainfo import BLOCK_SIZE
from p2pdist.storage.base import StorageError
from p2pdist.wire import messages as m

if TYPE_CHECKING:
    from p2pdist.engine.torrent import Torrent

log = logging.getLogger("p2pdist.torrent")

Key = tuple[int, int, int]
UPLOAD_BATCH = 32  # blocks per socket write when they are in memory (512 KiB)


class Uploads:
    """One torrent's request serving."""

    __slots__ = ("torrent", "throttle")

    def __init__(self, torrent: Torrent, throttle: Throttle) -> None:
        self.torrent = torrent
        self.throttle = throttle

    def on_requests(self, conn: PeerConnection, run: Sequence[Key]) -> None:
        """Requests from a peer, as (index, begin, length) keys.

        While we choke the peer, or for a piece we do not have, each request is refused (a
        ``reject`` under the fast extension, silence otherwise); the rest join the peer's
        upload queue in order.
        """
        wire = conn.wire
        if not wire.am_choking:
            picker = self.torrent.picker
            queue = conn.upload_queue
            if len(queue) > 2 * wire.limits.max_incoming_requests:
                compact_queue(queue, wire.requests_in)
            if picker is not None and picker.complete:
                queue.extend(run)  # a seed has every piece: no check per block
                run = []
            else:
                have = self.torrent.have
                refused = []
                for key in run:
                    if have[key[0]]:
                        queue.append(key)
                    else:
                        refused.append(key)
                run = refused
        if run and wire.fast:
            conn.writelines([wire.send(m.Reject(*key)) for key in run if key in wire.requests_in])
        elif run:
            for key in run:
                wire.forget_request(key)  # BEP 3 has no reject: the peer times the request out
        if conn.upload_queue and not conn.uploading:
            conn.uploading = True
            self.torrent.spawn(self._serve(conn))

    async def _serve(self, conn: PeerConnection) -> None:
        """Send requested blocks to one peer, in order, with flow control (module docstring)."""
        wire = conn.wire
        torrent = self.torrent
        storage = torrent.storage
        throttle = self.throttle
        queue = conn.upload_queue
        requests_in = wire.requests_in
        try:
            while queue and not conn.closed:
                keys: list[Key] = []
                blocks: list[bytes | memoryview] = []
                current, piece = -1, None
                batch = throttle.blocks_per_write(UPLOAD_BATCH, BLOCK_SIZE)
                while queue and len(keys) < batch:
                    key = queue.popleft()
                    if key not in requests_in or key in keys:
                        continue  # cancelled, dropped by a choke, or asked twice
                    index, begin, length = key
                    if index != current:
                        current, piece = index, storage.cached_piece(index)
                    if piece is not None:
                        blocks.append(piece[begin : begin + length])
                        keys.append(key)
                        continue
                    if keys:
                        queue.appendleft(key)
                        break
                    data = await storage.read_block(index, begin, length)
                    current = -1  # the piece is cached now: look it up again for the next key
                    if conn.closed or key not in requests_in:
                        continue
                    blocks.append(data)
                    keys.append(key)
                if not keys or conn.closed:
                    continue
                sent = sum(len(block) for block in blocks)
                if throttle.limited:
                    throttle.charge(sent)
                    delay = throttle.delay()
                    if delay > 0:
                        await asyncio.sleep(delay)
                        if conn.closed:
                            break
                keys, blocks = still_requested(requests_in, keys, blocks)
                conn.writelines(wire.frame_pieces(keys, blocks))
                conn.upload_meter.add(sent)
                torrent.upload_meter.add(sent)
                await conn.drain()
        except StorageError as exc:
            log.error("%s: cannot read for upload: %s", torrent.info.name, exc)
            conn.close("local read error")
        finally:
            conn.uploading = False


def compact_queue(queue: deque[Key], requests_in: dict[Key, None]) -> None:
    """Keep in a peer's upload queue only the requests still owed, once each, in order.

    Entries go stale when a request is cancelled or repeated; the upload loop skips them, but a
    peer that repeats or cancels while not reading could pile them up without end. Compacting
    when the queue passes twice the request cap keeps it within that, at O(1) a request.
    """
    kept = [key for key in dict.fromkeys(queue) if key in requests_in]
    queue.clear()
    queue.extend(kept)


def still_requested(
    requests_in: dict[Key, None], keys: list[Key], blocks: list[bytes | memoryview]
) -> tuple[list[Key], list[bytes | memoryview]]:
    """Drop blocks cancelled while the batch waited (a disk read, the rate limit)."""
    if all(key in requests_in for key in keys):
        return keys, blocks
    kept = [(key, block) for key, block in zip(keys, blocks) if key in requests_in]
    return [key for key, _ in kept], [block for _, block in kept]
