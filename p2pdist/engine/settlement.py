"""A whole piece comes back from storage: verified (announce it) or not (smart ban).

A verified piece settles in a done-callback at once (the picker, ``have`` to the peers, the
buffer back to the pool); it is announced only now, so a piece is never served before it is
on disk and checked. A failed hash, a piece that failed before and completion go on in a task.

A piece that fails its hash goes back to the picker. Its blocks' digests are kept with the
addresses that sent them; when the piece later verifies, the smart-ban ledger names the
addresses whose blocks differed, and those are banned. An address that sent at least half of a
failed piece gets a strike (``Strikes``, shared by the session's torrents). Evidence, strikes and
bans are per IP address, not per connection, so reconnecting wipes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING

from p2pdist.engine.peer import PeerConnection
from p2pdist.metainfo import BLOCK_SIZE
from p2pdist.piece_picker.smartban import SmartBan
from p2pdist.storage.base import StorageError
from p2pdist.wire import messages as m
from p2pdist.wire.state import Phase

if TYPE_CHECKING:
    from p2pdist.engine.torrent import Torrent

log = logging.getLogger("p2pdist.torrent")


class Settlement:
    """What happens to one torrent's pieces once storage has hashed them."""

    __slots__ = ("torrent", "failed_pieces", "smartban")

    def __init__(self, torrent: Torrent) -> None:
        self.torrent = torrent
        self.failed_pieces: set[int] = set()
        self.smartban = SmartBan()

    def piece_stored(self, index: int, buffer: bytearray, stored: asyncio.Future[bool]) -> None:
        """The worker hashed a whole piece (and wrote it when it matched)."""
        torrent = self.torrent
        receiver = torrent.receiver
        if torrent.stopping or stored.cancelled():
            receiver.recycle(buffer)
            return
        picker = torrent.picker
        assert picker is not None
        try:
            error = stored.exception()
            if error is not None:
                if not isinstance(error, StorageError):
                    log.error("%s: verifying piece %d failed", torrent.info.name, index, exc_info=error)
                    error = StorageError(f"internal error: {error}")
                receiver.recycle(buffer)
                self.storage_failed(index, error)
                return
            ok = stored.result()
            if ok and index not in self.failed_pieces:
                picker.piece_verified(index)
                torrent.mark_resume_dirty()
                receiver.recycle(buffer)
                self.announce_have(index)
                if picker.complete:
                    torrent.spawn(torrent.on_complete())
                return
            torrent.spawn(self._settle_and_recycle(index, buffer, ok))
        except Exception:  # a bug here must not leave the piece unsettled without a trace
            log.exception("%s: settling piece %d failed", torrent.info.name, index)
            torrent.set_error(f"internal error settling piece {index}")

    def storage_failed(self, index: int, exc: StorageError) -> None:
        """Disk full or unwritable: stop this torrent's downloading, keep everything else."""
        torrent = self.torrent
        assert torrent.picker is not None
        torrent.picker.piece_failed(index)
        if not torrent.errored:
            torrent.set_error(f"cannot write piece {index}: {exc}", disk_full=exc.disk_full)
            torrent.requests.stop_all()

    async def _settle_and_recycle(self, index: int, buffer: bytearray, ok: bool) -> None:
        try:
            await self._settle(index, buffer, ok)
        finally:
            self.torrent.receiver.recycle(buffer)

    async def _settle(self, index: int, buffer: bytearray, ok: bool) -> None:
        torrent = self.torrent
        picker = torrent.picker
        assert picker is not None
        strikes = torrent.strikes
        if ok:
            picker.piece_verified(index)
            torrent.mark_resume_dirty()
            if index in self.failed_pieces:
                self.failed_pieces.discard(index)
                digests = await asyncio.get_running_loop().run_in_executor(None, block_digests, bytes(buffer))
                culprits = self.smartban.piece_verified(index, digests)
                for ip in strikes.culprits(c for c in culprits if isinstance(c, str)):
                    self.ban(str(ip), f"sent corrupt data for piece {index}")
            self.announce_have(index)
            if picker.complete:
                await torrent.on_complete()
            return
        torrent.hash_failures += 1
        self.failed_pieces.add(index)
        digests = block_digests(bytes(buffer))
        sources = picker.senders(index)  # offset -> sender: the smart-ban evidence, by address
        self.smartban.record_failed(index, {begin: (trust_key(peer), digests[begin]) for begin, peer in sources.items()})
        contributors = picker.piece_failed(index)
        log.warning("%s: piece %d failed its hash check (%d peers contributed)", torrent.info.name, index, len(contributors))
        by_ip: dict[Hashable, int] = {}
        for peer, blocks in contributors.items():
            key = trust_key(peer)
            if isinstance(key, str):
                by_ip[key] = by_ip.get(key, 0) + blocks
        for ip in strikes.piece_failed(by_ip):
            self.ban(str(ip), f"{strikes.strikes(ip)} pieces it sent failed their hash check")
        torrent.requests.refill_all()

    def ban(self, ip: str, reason: str) -> None:
        """``ip`` is banned now (in ``strikes``): end its connections and forget its addresses."""
        torrent = self.torrent
        log.warning("%s: banned peer address %s: %s", torrent.info.name, ip, reason)
        torrent.dialler.forget_ip(ip)
        for conn in list(torrent.peers):
            if conn.address is not None and conn.address[0] == ip:
                conn.close(f"banned: {reason}")

    def announce_have(self, index: int) -> None:
        torrent = self.torrent
        for conn in list(torrent.peers):
            if conn.closed or conn.wire.phase is Phase.AWAIT_HANDSHAKE or not conn.wire.handshake_sent:
                continue
            if conn.have is None or not conn.have[index]:
                conn.write(conn.wire.send(m.Have(index)))
            if conn.wire.am_interested:
                torrent.events.update_interest(conn)


def trust_key(source: Hashable) -> Hashable:
    """Who a block came from, for evidence and strikes: a peer's IP address (so a reconnect
    changes nothing), any other source (the web seed) as itself."""
    if isinstance(source, PeerConnection) and source.address is not None:
        return source.address[0]
    return source


def block_digests(data: bytes) -> dict[int, bytes]:
    """SHA-1 of each 16 KiB block, keyed by offset (smart-ban evidence; only for failed pieces)."""
    return {begin: hashlib.sha1(data[begin : begin + BLOCK_SIZE]).digest() for begin in range(0, len(data), BLOCK_SIZE)}
