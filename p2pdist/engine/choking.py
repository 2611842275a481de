"""The choke round: the pure choker (piece_picker/choker.py) decides, this applies it.

One round every ``choke_interval`` while the torrent has peers (no peers, no loop, no timer).
A peer that becomes interested while an upload slot is free is unchoked at once rather than
at the next round. Choking a fast-extension peer rejects the requests it is owed; without the
extension the peer drops them itself (BEP 3).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from p2pdist.engine.peer import PeerConnection
from p2pdist.piece_picker.choker import ChokerState, PeerStats, decide
from p2pdist.wire import messages as m

if TYPE_CHECKING:
    from p2pdist.engine.torrent import Torrent


class Choking:
    """One torrent's upload slots."""

    __slots__ = ("torrent", "state", "running", "rounds")

    def __init__(self, torrent: Torrent) -> None:
        self.torrent = torrent
        self.state = ChokerState()
        self.running = False
        self.rounds = 0  # for tests and diagnostics

    def start(self) -> None:
        """Run the round loop if peers are there and it is not running."""
        if self.torrent.peers and not self.running:
            self.running = True
            self.torrent.spawn(self._loop())

    async def _loop(self) -> None:
        try:
            while self.torrent.peers:  # nobody to choke or unchoke: the loop ends until a peer comes
                self.round()
                await asyncio.sleep(self.torrent.settings.choke_interval)
        finally:
            self.running = False

    def round(self) -> None:
        torrent = self.torrent
        self.rounds += 1
        peers = [conn for conn in torrent.peers if conn.have is not None and not conn.closed]
        stats = [
            PeerStats(
                peer=conn,
                interested=conn.wire.peer_interested,
                choked=conn.wire.am_choking,
                download_rate=conn.download_meter.rate,
                upload_rate=conn.upload_meter.rate,
                is_seed=conn.is_seed,
                snubbed=conn.snubbed,
            )
            for conn in peers
        ]
        unchoke, self.state = decide(
            stats,
            seeding=torrent.picker is not None and torrent.picker.complete,
            slots=torrent.settings.upload_slots,
            now=torrent.clock(),
            rng=torrent.rng,
            state=self.state,
            optimistic_interval=torrent.settings.optimistic_interval,
        )
        for conn in peers:
            wire = conn.wire
            if conn in unchoke and wire.am_choking:
                conn.write(wire.send(m.Unchoke()))
            elif conn not in unchoke and not wire.am_choking:
                chunks = [wire.send(m.Choke())]
                if wire.fast:
                    chunks += [wire.send(m.Reject(*key)) for key in list(wire.requests_in)]
                conn.upload_queue.clear()
                conn.writelines(chunks)

    def interested(self, conn: PeerConnection) -> None:
        """Fill a free upload slot at once rather than waiting up to a whole choke round."""
        torrent = self.torrent
        unchoked = sum(1 for peer in torrent.peers if not peer.wire.am_choking)
        if conn.wire.am_choking and unchoked < torrent.settings.upload_slots and torrent.have.any():
            conn.write(conn.wire.send(m.Unchoke()))
