"""A remote peer that serves a torrent badly on purpose, built on the sans-IO codec.

``ScriptedPeer`` speaks through its own ``PeerWire`` (so every message it sends is well formed
and its side of the state is tracked), and decides with a seeded ``random.Random`` what to do
with each request, in rounds: answer it, reject it (fast extension), leave it for a later
round, or forget it without a word; a round may answer in any order, or choke instead (and
unchoke after a pause); after some blocks the peer may drop the connection; a cancelled or
choked-away request may be answered anyway, as if the piece crossed the cancel on the wire.
It is an ``asyncio.BufferedProtocol``, so it serves over real sockets (``loop.create_server``)
and over ``tests.support.virtual.MemoryNet`` alike.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from p2pdist.bitfield import Bitfield
from p2pdist.errors import RemoteError
from p2pdist.metainfo import Layout, Metainfo
from p2pdist.wire import messages as m
from p2pdist.wire.codec import NEED_DATA, PeerWire

Key = tuple[int, int, int]


@dataclass(frozen=True)
class Behaviour:
    """How one scripted peer treats our requests; chances are per request and per round."""

    fast: bool = True
    extensions: bool = True
    missing: frozenset[int] = frozenset()  # pieces it does not have
    answer: float = 1.0  # a request is answered this round...
    reject: float = 0.0  # ...or rejected (fast only; otherwise left for a later round)...
    forget: float = 0.0  # ...or never answered (we must snub it); the rest wait for a later round
    shuffle: bool = False  # answer a round's requests in random order
    choke: float = 0.0  # a round chokes instead of answering
    reject_on_choke: float = 1.0  # with the fast extension, each request a choke rejects
    late: float = 0.0  # a cancelled or choked-away request is answered all the same
    drop_after: int | None = None  # blocks sent on a connection (late ones too) before it is dropped
    drops: int = 1  # connections it drops at most (then it behaves)
    delay: float = 0.0  # seconds from the first request of a round to the round
    corrupt: frozenset[int] = frozenset()  # pieces whose blocks it first sends with a flipped byte
    seed: int = 0


class ScriptedSwarmPeer:
    """One scripted peer's listener side: a protocol per connection, shared counters."""

    def __init__(self, meta: Metainfo, data: bytes, behaviour: Behaviour, peer_id: bytes) -> None:
        self.meta = meta
        self.layout = Layout(meta.info)
        self.data = data
        self.behaviour = behaviour
        self.peer_id = peer_id
        self.rng = random.Random(behaviour.seed)
        self.drops_left = behaviour.drops
        self.corrupted: set[Key] = set()  # blocks sent bad once: the next copy is good
        self.connections: list[ScriptedPeer] = []
        self.sent = Sent()

    def protocol(self) -> ScriptedPeer:
        """The protocol factory for a listener (``loop.create_server`` or ``MemoryNet.listen``)."""
        peer = ScriptedPeer(self)
        self.connections.append(peer)
        return peer

    def close(self) -> None:
        for peer in self.connections:
            peer.close()

    def block(self, key: Key) -> bytes:
        index, begin, length = key
        start = index * self.meta.info.piece_length + begin
        payload = self.data[start : start + length]
        if index in self.behaviour.corrupt and key not in self.corrupted:
            self.corrupted.add(key)
            payload = bytes([payload[0] ^ 0xFF]) + payload[1:]
        return payload


class Sent(dict[str, int]):
    """Messages a scripted peer sent, by kind (what a run exercised)."""

    def add(self, kind: str, count: int = 1) -> None:
        self[kind] = self.get(kind, 0) + count


class ScriptedPeer(asyncio.BufferedProtocol):
    """One connection of a ``ScriptedSwarmPeer``; see the module docstring."""

    def __init__(self, owner: ScriptedSwarmPeer) -> None:
        self.owner = owner
        behaviour = owner.behaviour
        self.behaviour = behaviour
        self.rng = owner.rng
        self.wire = PeerWire(
            peer_id=owner.peer_id,
            info_hash=owner.meta.info_hash,
            layout=owner.layout,
            fast=behaviour.fast,
            extensions=behaviour.extensions,
        )
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.pending: list[Key] = []  # requests owed, in arrival order
        self.sent_blocks = 0
        self._timers: list[asyncio.TimerHandle] = []
        self._round: asyncio.TimerHandle | None = None
        self._choke_pause = False

    # -- asyncio.BufferedProtocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        try:
            return self.wire.get_buffer(sizehint)
        except RemoteError:
            self.close()
            return memoryview(bytearray(4096))

    def buffer_updated(self, nbytes: int) -> None:
        if self.closed:
            return
        self.wire.buffer_updated(nbytes)
        try:
            while not self.closed:
                event = self.wire.next_event()
                if event is NEED_DATA:
                    break
                self._on_event(event)
        except RemoteError:
            self.close()

    def eof_received(self) -> bool:
        self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()

    # -- the script ------------------------------------------------------------------------

    def _on_event(self, event: object) -> None:
        wire = self.wire
        if isinstance(event, m.Handshake):
            chunks = [wire.handshake()]
            if wire.extensions:
                chunks.append(wire.extension_handshake(client="scripted"))
            missing = self.behaviour.missing
            if wire.fast and not missing:
                chunks.append(wire.send(m.HaveAll()))
            else:
                have = Bitfield.full(self.owner.layout.num_pieces)
                for index in missing:
                    have.clear(index)
                chunks.append(wire.send(m.BitfieldMessage(have)))
            self._write(chunks)
        elif isinstance(event, m.Interested):
            if wire.am_choking and not self._choke_pause:
                self._unchoke()
        elif isinstance(event, m.Request):
            key = (event.index, event.begin, event.length)
            if key not in wire.requests_in or key in self.pending:
                return  # BEP 3: a request that crossed our choke is dropped, not owed
            self.pending.append(key)
            if self._round is None:
                self._round = self._later(self.behaviour.delay, self._serve)
        elif isinstance(event, m.Cancel):
            key = (event.index, event.begin, event.length)
            if key in self.pending:
                self.pending.remove(key)
                if self.rng.random() < self.behaviour.late:
                    self._write([self._piece_bytes(key, "crossed a cancel")])
                elif wire.fast and self.rng.random() < 0.5:
                    self._write([wire.send(m.Reject(*key))])  # as libtorrent answers a cancel

    def _later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        handle = asyncio.get_running_loop().call_later(delay, callback)
        self._timers.append(handle)
        return handle

    def _unchoke(self) -> None:
        self._choke_pause = False
        if not self.closed and self.wire.am_choking and self.wire.peer_interested:
            self._write([self.wire.send(m.Unchoke())])

    def _serve(self) -> None:
        """One round over the requests owed."""
        self._round = None
        if self.closed or not self.pending:
            return
        wire, rng, behaviour = self.wire, self.rng, self.behaviour
        chunks: list[bytes] = []
        if not wire.am_choking and rng.random() < behaviour.choke:
            chunks.append(wire.send(m.Choke()))  # without the fast extension this drops the lot
            owed, self.pending = self.pending, []
            for key in owed:
                if not wire.fast:
                    if rng.random() < behaviour.late:
                        chunks.append(self._piece_bytes(key, "crossed a choke"))
                elif rng.random() < behaviour.reject_on_choke:
                    chunks.append(wire.send(m.Reject(*key)))
                else:
                    self.pending.append(key)  # answered later, choked or not (BEP 6 allows it)
            self._choke_pause = True
            self._later(max(0.01, 4 * behaviour.delay), self._unchoke)
        else:
            batch, self.pending = self.pending, []
            if behaviour.shuffle:
                rng.shuffle(batch)
            for key in batch:
                roll = rng.random()
                if roll < behaviour.answer:
                    chunks.append(wire.send(m.Piece(key[0], key[1], self.owner.block(key))))
                    self.sent_blocks += 1
                elif roll < behaviour.answer + behaviour.reject and wire.fast:
                    chunks.append(wire.send(m.Reject(*key)))
                elif roll < behaviour.answer + behaviour.reject + behaviour.forget:
                    wire.forget_request(key)
                else:
                    self.pending.append(key)
        self._write(chunks)
        drop_after = behaviour.drop_after
        if drop_after is not None and self.sent_blocks >= drop_after and self.owner.drops_left > 0:
            self.owner.drops_left -= 1
            self.owner.sent.add("drop")
            self.close()
            return
        if self.pending and self._round is None:
            self._round = self._later(behaviour.delay, self._serve)

    def _piece_bytes(self, key: Key, why: str) -> bytes:
        """A piece message framed by hand (the codec would refuse one it no longer owes), as if
        it had been on the wire already when the cancel or the choke came."""
        self.owner.sent.add(why)
        self.sent_blocks += 1
        return m.Piece(key[0], key[1], self.owner.block(key)).encode()

    def _write(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            kind = _KIND.get(chunk[4]) if len(chunk) > 4 and chunk[0] != 19 else None
            if kind is not None:
                self.owner.sent.add(kind)
        if chunks and self.transport is not None and not self.closed:
            self.transport.write(b"".join(chunks))

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.abort()
        self._stop()

    def _stop(self) -> None:
        self.closed = True
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()


_KIND = {int(kind): kind.name.lower() for kind in (m.MessageId.CHOKE, m.MessageId.UNCHOKE, m.MessageId.PIECE, m.MessageId.REJECT)}
