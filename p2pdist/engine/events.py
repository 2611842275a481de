"""The message dispatch: each wire event a torrent's peer sends, to the part that handles it.

Most events are about what the peer has (its bitfield, ``have``) and so whether we want
anything from it (interest, then the pipeline's refill); the rest go to the request pipeline
(choke, unchoke, reject), the upload side (a lone request, interest in our pieces) and the
web-seed claims. The handshake is answered here too: our extension handshake and what we
have, and which of two connections to the same peer survives.

Piece and request messages never come through here: the engine's codecs hand them over as
runs (``Torrent.on_blocks``, ``Torrent.on_requests``), the hot paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from p2pdist.bitfield import Bitfield
from p2pdist.engine.peer import PeerConnection
from p2pdist.engine.ratelimit import RateMeter
from p2pdist.errors import LocalError
from p2pdist.wire import fetching
from p2pdist.wire import messages as m

if TYPE_CHECKING:
    from p2pdist.engine.torrent import Torrent


class Events:
    """One torrent's handlers for its peers' wire events."""

    __slots__ = ("torrent", "peer_ids", "_dispatch")

    def __init__(self, torrent: Torrent) -> None:
        self.torrent = torrent
        self.peer_ids: dict[bytes, PeerConnection] = {}  # the connection we keep per peer id
        self._dispatch: dict[type, Callable[[PeerConnection, Any], None]] | None = None

    def on_event(self, conn: PeerConnection, event: object) -> None:
        dispatch = self._dispatch
        if dispatch is None:
            dispatch = self._dispatch = self.dispatch()
        dispatch.get(type(event), self._unexpected)(conn, event)

    def forget(self, conn: PeerConnection) -> None:
        """``conn`` ended: its peer id is free for another connection."""
        handshake = conn.wire.peer_handshake
        if handshake is not None and self.peer_ids.get(handshake.peer_id) is conn:
            del self.peer_ids[handshake.peer_id]

    def dispatch(self) -> dict[type, Callable[[PeerConnection, Any], None]]:
        """Wire event type -> handler, made on the first message: a seed nobody visits never
        needs its bound methods. Piece messages always come as runs (``on_blocks``)."""
        return {
            m.Handshake: self.on_handshake,
            m.ExtendedHandshake: self._on_extended_handshake,
            m.BitfieldMessage: self._on_bitfield,
            m.HaveAll: self._on_have_all,
            m.HaveNone: self._on_have_none,
            m.Have: self._on_have,
            m.Choke: self._on_choke,
            m.Unchoke: self._on_unchoke,
            m.Interested: self._on_interested,
            m.NotInterested: self._ignore,
            m.Request: self._on_request,
            m.Cancel: self._ignore,  # the codec forgets the request; the upload loop skips it
            m.Reject: self._on_reject,
            m.AllowedFast: self._ignore,  # we do not request while choked; unchoke rounds are short on a LAN
            m.Suggest: self._ignore,
            m.Port: self._ignore,  # DHT port: private torrents use no DHT
            m.Extended: self._on_extended,
            m.KeepAlive: self._ignore,
        }

    def _ignore(self, conn: PeerConnection, event: object) -> None:
        return None

    def _unexpected(self, conn: PeerConnection, event: object) -> None:
        raise LocalError(f"no handler for {type(event).__name__}")  # the driver closes the connection

    def on_handshake(self, conn: PeerConnection, handshake: m.Handshake) -> None:
        other = self.peer_ids.get(handshake.peer_id)
        if other is not None and other is not conn:
            # Two peers that dial each other at once must agree on which connection survives:
            # the one opened by the smaller peer id, decided the same way on both ends.
            keep_outbound = self.torrent.peer_id < handshake.peer_id
            if conn.outbound == other.outbound or conn.outbound != keep_outbound:
                conn.close("duplicate connection to the same peer")
                return
            other.close("duplicate connection to the same peer (simultaneous open)")
        self.peer_ids[handshake.peer_id] = conn
        conn.download_meter = RateMeter(self.torrent.clock)
        conn.upload_meter = RateMeter(self.torrent.clock)
        self.torrent.requests.retarget(conn, self.torrent.settings.min_request_queue * 2)
        chunks = []
        if conn.wire.extensions:
            chunks.append(
                conn.wire.extension_handshake(
                    client=self.torrent.settings.client_name, listen_port=self.torrent.listen_port or None, extensions={fetching.NAME: fetching.LOCAL_ID}
                )
            )
        have = self.torrent.have
        if conn.wire.fast and have.all():
            chunks.append(conn.wire.send(m.HaveAll()))
        elif conn.wire.fast and not have.any():
            chunks.append(conn.wire.send(m.HaveNone()))
        else:
            chunks.append(conn.wire.send(m.BitfieldMessage(have.copy())))
        conn.writelines(chunks)

    def _on_extended_handshake(self, conn: PeerConnection, handshake: m.ExtendedHandshake) -> None:
        if handshake.reqq:
            self.torrent.requests.retarget(conn, conn.queue_target)
        self.torrent.claims.introduce(conn, self.torrent.have)

    def _describe_peer(self, conn: PeerConnection, field: Bitfield | None, *, has_all: bool = False) -> None:
        assert self.torrent.picker is not None
        if conn.have is not None:
            raise LocalError("peer described twice")  # the codec's phase table prevents this
        conn.have = Bitfield.full(self.torrent.info.num_pieces) if has_all else (field or Bitfield(self.torrent.info.num_pieces))
        conn.is_seed = conn.have.all()
        self.torrent.picker.add_peer(conn, None if has_all else conn.have, has_all=has_all)
        if conn.is_seed and self.torrent.picker.complete:
            conn.close("both are seeds")
            return
        self.update_interest(conn)

    def _on_bitfield(self, conn: PeerConnection, event: m.BitfieldMessage) -> None:
        field = event.bitfield
        if field.all():
            self._describe_peer(conn, None, has_all=True)
        else:
            self._describe_peer(conn, field)

    def _on_have_all(self, conn: PeerConnection, event: m.HaveAll) -> None:
        self._describe_peer(conn, None, has_all=True)

    def _on_have_none(self, conn: PeerConnection, event: m.HaveNone) -> None:
        self._describe_peer(conn, None)

    def _on_have(self, conn: PeerConnection, event: m.Have) -> None:
        assert self.torrent.picker is not None
        index = event.index
        if conn.have is None:
            self._describe_peer(conn, None)
            if conn.closed:
                return
        assert conn.have is not None
        if not conn.have.set(index):
            return
        self.torrent.picker.peer_has(conn, index)
        if conn.have.all():
            conn.is_seed = True
            if self.torrent.picker.complete:
                conn.close("both are seeds")
                return
        if not conn.wire.am_interested and not self.torrent.picker.have[index]:
            self.update_interest(conn)
        elif not conn.wire.peer_choking:
            self.torrent.requests.refill(conn)

    def update_interest(self, conn: PeerConnection) -> None:
        assert self.torrent.picker is not None
        if conn.closed or conn.have is None:
            return
        interesting = not self.torrent.picker.complete and self.torrent.picker.is_interesting(conn)
        if interesting and not conn.wire.am_interested:
            conn.write(conn.wire.send(m.Interested()))
        elif not interesting and conn.wire.am_interested:
            conn.write(conn.wire.send(m.NotInterested()))
        if interesting:
            self.torrent.requests.refill(conn)

    def _on_choke(self, conn: PeerConnection, event: m.Choke) -> None:
        self.torrent.requests.choked(conn)

    def _on_unchoke(self, conn: PeerConnection, event: m.Unchoke) -> None:
        self.torrent.requests.refill(conn)

    def _on_reject(self, conn: PeerConnection, event: m.Reject) -> None:
        self.torrent.requests.rejected(conn, event)

    def _on_interested(self, conn: PeerConnection, event: m.Interested) -> None:
        self.torrent.choking.interested(conn)

    def _on_request(self, conn: PeerConnection, event: m.Request) -> None:
        """A request as the peer's first message (before its bitfield the codec does not batch)."""
        self.torrent.uploads.on_requests(conn, [(event.index, event.begin, event.length)])

    def _on_extended(self, conn: PeerConnection, event: m.Extended) -> None:
        self.torrent.claims.on_extended(conn, event, self.torrent.have)
