"""The web-seed claim protocol (p2pdist_fetching), the peers' half of ``engine.webseed``.

A PC that starts fetching a piece over HTTP tells its connected peers (an extension message
naming the piece); a peer that hears it leaves that piece to the claimant for a while
(``fetching.CLAIM_TTL``) and fetches something else, so the PCs of a branch pull each piece
over the WAN once. A claim lapses when its peer disconnects, says it has the piece, or its
time runs out. A peer that connects later hears our standing claims in its extension
handshake's answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from p2pdist.bitfield import Bitfield
from p2pdist.engine.peer import PeerConnection
from p2pdist.wire import fetching
from p2pdist.wire import messages as m
from p2pdist.wire.state import Phase


class WebClaims:
    """Claims heard from peers and our own, for one torrent."""

    __slots__ = ("num_pieces", "clock", "heard", "own")

    def __init__(self, num_pieces: int, clock: Callable[[], float]) -> None:
        self.num_pieces = num_pieces
        self.clock = clock
        self.heard: dict[int, tuple[PeerConnection, float]] = {}  # piece -> (peer, until)
        self.own: set[int] = set()  # pieces we said we fetch from the web seed

    def on_extended(self, conn: PeerConnection, event: m.Extended, have: Bitfield) -> None:
        if event.ext_id != fetching.LOCAL_ID:
            return  # we advertise no other extension, so nothing else is meant for us
        index = fetching.decode_payload(event.payload, self.num_pieces)
        if not have[index]:
            self.heard[index] = (conn, self.clock() + fetching.CLAIM_TTL)

    def introduce(self, conn: PeerConnection, have: Bitfield) -> None:
        """A newcomer's extension handshake arrived: tell it what we fetch from the web seed now."""
        if self.own:
            self.own = {i for i in self.own if not have[i]}
            self.send(conn, sorted(self.own))

    def claim(self, index: int, peers: Iterable[PeerConnection]) -> None:
        """We fetch ``index`` from the web seed now: say so to every peer."""
        self.heard.pop(index, None)
        self.own.add(index)
        for conn in peers:
            self.send(conn, [index])

    def send(self, conn: PeerConnection, pieces: Iterable[int]) -> None:
        ext = conn.wire.peer_extension_handshake
        if conn.closed or conn.is_seed or ext is None or conn.wire.phase is Phase.CLOSED:
            return
        peer_id = ext.extensions.get(fetching.NAME)
        if peer_id:
            conn.writelines(
                [conn.wire.send(m.Extended(peer_id, fetching.encode_payload(i))) for i in pieces if conn.have is None or not conn.have[i]]
            )

    def fetchers(self) -> set[bytes]:
        """Peer ids of the connected peers with a live claim (fetching right now)."""
        now = self.clock()
        return {
            conn.wire.peer_handshake.peer_id
            for index, (conn, until) in self.heard.items()
            if claim_live(index, conn, until, now) and conn.wire.peer_handshake is not None
        }

    def claimed_elsewhere(self, index: int) -> bool:
        """A connected peer said it fetches ``index`` from the web seed, and has not finished."""
        claim = self.heard.get(index)
        if claim is None:
            return False
        if not claim_live(index, *claim, self.clock()):
            del self.heard[index]
            return False
        return True


def claim_live(index: int, conn: PeerConnection, until: float, now: float) -> bool:
    """A claim still stands: its peer is connected, has not got the piece, in time."""
    return not conn.closed and now <= until and not (conn.have is not None and conn.have[index])
