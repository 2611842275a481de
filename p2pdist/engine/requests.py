"""What is in flight from each peer, and the pipeline that keeps it full: one owner.

A block in flight is written in two places, each for its own reason: the peer's codec keeps
``requests_out`` (ordered, so it can tell a requested block from an unrequested one, frame the
headers a scatter read expects, and drop the lot when a BEP 3 choke discards them), and the
picker keeps each block's requesters (so endgame can ask a second peer and cancel the loser,
and smart ban knows who sent what). The codec updates its side itself as messages pass, and
the scatter-read driver on the codec's behalf (``place_many``); everything the engine does to
in flight requests goes through this class, the only engine code that changes or reads
either side: asking (``refill``), giving back (``withdraw``, ``rejected``, ``choked``,
``peer_gone``), receiving (``take``, ``take_placed``) and choosing the blocks a driver may read
in place (``sole_keys``).

The pipeline's depth follows the measured rate: about ``request_queue_seconds`` of data in
flight, doubled whenever a whole queue's worth arrived (slow start), within the peer's
``reqq``; it is topped up in one batch when it falls to three quarters of its target.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence, Sized
from itertools import islice
from typing import TYPE_CHECKING

from p2pdist.engine.peer import PeerConnection
from p2pdist.errors import LocalError
from p2pdist.metainfo import BLOCK_SIZE
from p2pdist.piece_picker.picker import Block, PiecePicker
from p2pdist.wire import messages as m

if TYPE_CHECKING:
    from p2pdist.engine.torrent import Torrent

log = logging.getLogger("p2pdist.torrent")

Key = tuple[int, int, int]
DEFAULT_REQQ = 250  # libtorrent's conservative default when a peer names none
Answer = tuple[bool, Sequence[tuple[Hashable, Block]]] | None  # the picker's, per block


class Requests:
    """The request pipeline of one torrent's peers."""

    __slots__ = ("torrent", "take", "take_placed")

    def __init__(self, torrent: Torrent) -> None:
        self.torrent = torrent
        # Receiving, bound to the picker's own methods once it exists (``bind``): the hot path
        # pays no call of its own for them. The codec popped its side of each block already
        # (parsing it, or the driver's ``place_many`` for blocks read in place).
        self.take: Callable[[Hashable, Sequence[tuple[int, int, Sized]]], list[Answer]] = _no_picker
        self.take_placed: Callable[[Hashable, Sequence[Key]], list[Answer]] = _no_picker

    def bind(self, picker: PiecePicker) -> None:
        """The torrent's picker exists (storage was checked): receive through it."""
        self.take = picker.take_blocks  # the picker's answer for each block of a run
        self.take_placed = picker.take_sole_run  # the same for blocks read into ``sole_keys``' slots

    @property
    def picker(self) -> PiecePicker:
        picker = self.torrent.picker
        assert picker is not None
        return picker

    # -- depth -----------------------------------------------------------------------------

    def peer_reqq(self, conn: PeerConnection) -> int:
        ext = conn.wire.peer_extension_handshake
        reqq = ext.reqq if ext is not None and ext.reqq else DEFAULT_REQQ
        return min(reqq, self.torrent.settings.max_request_queue)

    def retarget(self, conn: PeerConnection, target: int) -> None:
        """Set how many requests to keep in flight with ``conn`` (within our cap and its reqq)
        and the low-water mark below which the pipeline is topped up in one batch."""
        conn.queue_target = max(1, min(target, self.peer_reqq(conn)))
        conn.refill_at = conn.queue_target * 3 // 4

    def retune(self, conn: PeerConnection, rate: float) -> None:
        """The tick's trim: about ``request_queue_seconds`` of data at the measured rate."""
        settings = self.torrent.settings
        wanted = int(rate * settings.request_queue_seconds / BLOCK_SIZE) + settings.min_request_queue
        self.retarget(conn, max(settings.min_request_queue, min(conn.queue_target, 2 * wanted)))

    # -- asking ----------------------------------------------------------------------------

    def refill(self, conn: PeerConnection) -> None:
        """Top up this peer's request pipeline in one write, if it fell low enough."""
        torrent = self.torrent
        picker = torrent.picker
        if picker is None or conn.closed or conn.have is None or conn.wire.peer_choking or picker.complete:
            return
        if not torrent.downloading:
            return
        in_flight = len(conn.wire.requests_out)
        if in_flight > conn.refill_at:
            return
        blocks = picker.pick(conn, conn.queue_target - in_flight)
        if blocks:
            conn.write(conn.wire.send_requests(blocks))

    def refill_all(self, exclude: PeerConnection | None = None) -> None:
        for conn in list(self.torrent.peers):
            if conn is not exclude:
                self.refill(conn)

    def after_blocks(self, conn: PeerConnection) -> None:
        """Blocks arrived from ``conn`` (counted in ``blocks_since_growth`` by the receiver, which
        calls this only when one of the two applies): slow start, then the refill.

        Each time a whole queue's worth has arrived the queue doubles, so a fast link reaches a
        full pipeline within a few hundred blocks; the tick trims it back for slower peers."""
        if conn.blocks_since_growth >= conn.queue_target:
            conn.blocks_since_growth = 0
            self.retarget(conn, conn.queue_target * 2)
        if len(conn.wire.requests_out) <= conn.refill_at:
            self.refill(conn)

    # -- giving back -----------------------------------------------------------------------

    def withdraw(self, conn: PeerConnection, *, cancel: bool) -> list[bytes]:
        """Give every block requested from ``conn`` back to the picker; with ``cancel``, the
        ``cancel`` messages for those still on the wire (the caller writes them)."""
        picker = self.picker
        requests_out = conn.wire.requests_out
        chunks = []
        for block in list(picker.requested_from(conn)):
            picker.block_lost(conn, block)
            if cancel and (block.index, block.begin, block.length) in requests_out:
                chunks.append(conn.wire.send(m.Cancel(block.index, block.begin, block.length)))
        return chunks

    def stop_all(self) -> None:
        """Cancel every request in flight and lose interest: blocks we cannot store are waste."""
        for conn in list(self.torrent.peers):
            if conn.closed or conn.have is None:
                continue
            chunks = self.withdraw(conn, cancel=True)
            if conn.wire.am_interested:
                chunks.append(conn.wire.send(m.NotInterested()))
            conn.writelines(chunks)

    def rejected(self, conn: PeerConnection, event: m.Reject) -> None:
        """The codec dropped the request from ``requests_out``; the picker's side follows."""
        self.picker.block_lost(conn, Block(event.index, event.begin, event.length))  # a no-op unless outstanding with conn
        if not conn.wire.peer_choking:
            self.refill(conn)

    def choked(self, conn: PeerConnection) -> None:
        """Without the fast extension a choke drops every request we had with this peer (the
        codec cleared its side already)."""
        if not conn.wire.fast and conn.have is not None:
            self.withdraw(conn, cancel=False)
            self.refill_all(exclude=conn)

    def peer_gone(self, conn: PeerConnection) -> None:
        picker = self.torrent.picker
        if picker is not None and conn.have is not None:
            picker.remove_peer(conn)

    def stalled(self, conn: PeerConnection, now: float) -> bool:
        """Requests are in flight and nothing has come for them in ``request_timeout``."""
        return bool(conn.wire.requests_out) and now - conn.last_block > self.torrent.settings.request_timeout and not conn.snubbed

    def snub(self, conn: PeerConnection) -> None:
        """A peer that sends nothing for our requests: give its blocks to others first, then
        ask it again for what is left, at the shortest queue. Nothing else would ask it before
        something arrives from some peer (a block, an unchoke, a piece verified), so a download
        whose only peer is that slow would wait for ever."""
        conn.snubbed = True
        self.retarget(conn, self.torrent.settings.min_request_queue)
        conn.writelines(self.withdraw(conn, cancel=True))
        log.info("%s: peer %s snubbed us", self.torrent.info.name, conn.describe())
        self.refill_all(exclude=conn)
        self.refill(conn)

    # -- receiving -------------------------------------------------------------------------

    def sole_keys(self, conn: PeerConnection, limit: int) -> list[Key]:
        """The next blocks ``conn`` should send, in request order, up to the first one also
        asked of another peer or already received: only those may be read in place."""
        keys = list(islice(conn.wire.requests_out, limit))
        del keys[self.picker.sole_requests(conn, keys, limit) :]
        return keys

    @staticmethod
    def cancel_duplicates(cancels: Sequence[tuple[Hashable, Block]]) -> None:
        """Endgame: the block came from one peer; cancel it with the others asked for it."""
        for other, dup in cancels:
            if isinstance(other, PeerConnection) and not other.closed:
                other.write(other.wire.send(m.Cancel(dup.index, dup.begin, dup.length)))


def _no_picker(peer: Hashable, run: Sequence[object]) -> list[Answer]:
    raise LocalError("blocks received before the torrent checked its data")
