"""Sans-IO peer wire codec: bytes in, message events out, bytes to send back.

``PeerWire`` holds one connection's protocol state and nothing else: no socket, no clock, no
torrent logic. Feed it with ``receive_data`` (or, from an ``asyncio.BufferedProtocol``, with
``get_buffer``/``buffer_updated`` so bytes land in its buffer without a copy), then call
``next_event`` until it returns ``NEED_DATA``. Each event is typed (``Event``): the peer's
handshake, a message dataclass of ``messages`` made by the decoder its ``MessageId`` selects,
or a run of pieces or requests. Encode what you send through ``send`` (a ``messages.Message``)
so the codec knows our side of the state (choking, requests in flight).

Every limit below has its reason next to it; a peer that breaks one gets a ``ProtocolError``,
which ends that connection and nothing else: the phase becomes CLOSED, buffered input is
dropped, and ``next_event``, ``receive_data`` and ``get_buffer`` keep raising. Memory stays
bounded by one fixed buffer (4 KiB until ``bind``, then two of the largest legal frames, at
least 256 KiB) whatever the peer sends; our own misuse of ``send`` is a ``LocalError`` that
records nothing.

The module is long (about 900 lines) on purpose: it is one connection's state machine, and
its receive loops, decoders and encoders all read and change that one state. Split across
modules it would become mixins sharing private attributes, and the per-block loops would pay
an attribute hop for what is now a local; the message layouts are in ``messages`` and the
phase table in ``state``, which is what splits cleanly.
"""

from __future__ import annotations

import enum
import functools
import struct
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import groupby, repeat
from operator import add, itemgetter
from typing import Final, TypeVar, Union

from p2pdist import bencode
from p2pdist.bitfield import Bitfield
from p2pdist.errors import BencodeError, LocalError, ProtocolError, RemoteError
from p2pdist.metainfo.layout import BLOCK_SIZE, Layout
from p2pdist.wire import messages as m
from p2pdist.wire.state import EXTENSION_ONLY, FAST_ONLY, TRANSITIONS, Phase

BlockKey = tuple[int, int, int]  # (index, begin, length)


class NeedData(enum.Enum):
    """``next_event``'s "no complete message yet": a one-member enum, so ``is NEED_DATA``
    narrows an event's type for a type checker."""

    NEED_DATA = "need data"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA

_U32 = struct.Struct(">I")
_U32x2 = struct.Struct(">II")
_U32x3 = struct.Struct(">III")
_U16 = struct.Struct(">H")
_PIECE_HEADER = struct.Struct(">IBII")
_REQUEST = struct.Struct(">IBIII")
# The two ids the hot path compares a buffer byte with, as exact ints: a comparison with an
# IntEnum member costs an attribute lookup and misses the interpreter's int fast path.
_PIECE_ID: Final = int(m.MessageId.PIECE)
_REQUEST_ID: Final = int(m.MessageId.REQUEST)
_HANDSHAKE_LIMITS = bencode.Limits(max_depth=4, max_tokens=512, max_string=4096, max_int_digits=12)
_DESCRIBE = (m.BitfieldMessage, m.HaveAll, m.HaveNone)
# Messages we may send before our bitfield without closing the window for it (as state.py
# lets the peer do).
_KEEPS_WINDOW = (m.ExtendedHandshake, m.Extended, m.KeepAlive, m.AllowedFast, m.Port)
_UNBOUND_BUFFER = 4096  # receive buffer before bind(): a handshake and what follows it in one read
_SENDABLE = frozenset(kind for phase, kind in TRANSITIONS if phase is not Phase.AWAIT_HANDSHAKE)


class PieceRun(list[tuple[int, int, memoryview]]):
    """Consecutive piece messages as ``(index, begin, data)`` tuples (``runs`` mode).

    Each data is a memoryview into the codec's receive buffer, valid only until the next call
    into the codec: copy it out at once. A socket read holds several blocks; one event per
    read instead of one per block is what keeps a pure-Python receive path near line rate.
    """

    __slots__ = ()


class RequestRun(list[BlockKey]):
    """Consecutive request messages as ``(index, begin, length)`` keys (``runs`` mode)."""

    __slots__ = ()


# What ``next_event`` returns: the peer's handshake, one message, or (``runs`` mode) a run.
Event = Union[m.Handshake, m.Message, PieceRun, RequestRun]
_M = TypeVar("_M", bound=m.Message)


@dataclass(frozen=True)
class WireLimits:
    # Every client requests 16 KiB blocks; libtorrent and Transmission refuse larger requests too.
    max_request_length: int = BLOCK_SIZE
    # Requests we queue for a peer before it must wait; advertised as `reqq` in our extension
    # handshake. 500 keeps a 1 Gbit/s link busy at 10 ms RTT and bounds memory to ~8 MiB.
    max_incoming_requests: int = 500
    # Requests that may arrive after we choke (they crossed our choke on the wire): one full queue.
    max_requests_while_choked: int = 500
    # Requests for a block we still owe the peer. No client asks twice for a block it is
    # waiting for (a re-sent queue after a timeout is the worst an honest one does), while a
    # peer that repeats its requests without reading makes us queue each repetition.
    max_duplicate_requests: int = 500
    # We advertise no extension with large payloads; the BEP 10 handshake is a few hundred bytes.
    max_extension_payload: int = 64 * 1024
    # Cancelled requests whose piece may still be in flight; older ones are forgotten.
    max_cancelled_remembered: int = 2048
    # allowed_fast sets are a handful of pieces (BEP 6 suggests 10).
    max_allowed_fast: int = 256


@functools.lru_cache(maxsize=8)
def _piece_templates(piece_length: int) -> tuple[bytes, bytes]:
    """The requests and the piece headers for every block of piece 0 (see
    ``PeerWire._frame_whole_blocks``); empty when blocks do not tile the piece. Made once per
    piece length, not per connection."""
    if piece_length % BLOCK_SIZE:
        return b"", b""
    starts = range(0, piece_length, BLOCK_SIZE)
    requests = b"".join([_REQUEST.pack(13, 6, 0, begin, BLOCK_SIZE) for begin in starts])
    headers = b"".join([_PIECE_HEADER.pack(9 + BLOCK_SIZE, 7, 0, begin) for begin in starts])
    return requests, headers


class PeerWire:
    """One peer connection's wire protocol state."""

    def __init__(
        self,
        *,
        peer_id: bytes,
        info_hash: bytes | None = None,
        layout: Layout | None = None,
        fast: bool = True,
        extensions: bool = True,
        limits: WireLimits = WireLimits(),
        runs: bool = False,
    ) -> None:
        if len(peer_id) != 20:
            raise LocalError("peer id must be 20 bytes")
        self.limits = limits
        # With runs, consecutive piece messages come out as one PieceRun event and consecutive
        # requests as one RequestRun (see those classes), so the engine makes no event object
        # and no call per 16 KiB block; piece data are borrowed views of the receive buffer.
        self.runs = runs
        self.our_peer_id = peer_id
        self.our_reserved = m.make_reserved(extensions=extensions, fast=fast)
        self.info_hash = info_hash
        self.phase = Phase.AWAIT_HANDSHAKE
        self.peer_handshake: m.Handshake | None = None
        self.fast = False
        self.extensions = False
        self.peer_extension_handshake: m.ExtendedHandshake | None = None
        self.am_choking = True
        self.am_interested = False
        self.peer_choking = True
        self.peer_interested = False
        self.handshake_sent = False
        self._described = False  # we sent bitfield / have_all / have_none (or any later message)
        self.requests_out: dict[BlockKey, None] = {}  # ordered: ours in flight to the peer
        self._cancelled: OrderedDict[BlockKey, None] = OrderedDict()
        self.requests_in: dict[BlockKey, None] = {}  # theirs we still owe a piece or reject
        self._choked_requests = 0
        self.duplicate_requests = 0  # requests for blocks already in requests_in, ever
        self.allowed_fast_in: set[int] = set()  # pieces the peer lets us request while choked
        self.allowed_fast_out: set[int] = set()  # pieces we let the peer request while choked
        self._layout: Layout | None = None
        self._request_template = self._header_template = b""  # see _frame_whole_blocks
        self._buf = bytearray(0)
        self._view = memoryview(self._buf)  # of _buf, which only ever changes by same-size writes
        self._start = 0
        self._end = 0
        # Bytes handed to receive_data that did not fit the buffer yet. The buffer never grows
        # past its fixed capacity: this queue only holds what the caller itself passed in, and
        # next_event moves it into the buffer as messages are consumed.
        self._overflow: deque[memoryview] = deque()
        self._overflow_bytes = 0
        if layout is not None:
            self.bind(layout)

    # -- setup -----------------------------------------------------------------------------

    def bind(self, layout: Layout, info_hash: bytes | None = None) -> None:
        """Attach the torrent's geometry (an inbound connection learns it from the handshake)."""
        if info_hash is not None:
            self.info_hash = info_hash
        self._layout = layout
        self._num_pieces = layout.num_pieces
        self._piece_length = layout.piece_length
        self._last_piece_size = layout.piece_size(layout.num_pieces - 1)
        self._request_template, self._header_template = _piece_templates(layout.piece_length)
        bitfield_len = (layout.num_pieces + 7) // 8
        self.max_message = max(9 + self.limits.max_request_length, 1 + bitfield_len, 2 + self.limits.max_extension_payload)
        capacity = max(256 * 1024, 2 * (self.max_message + 4))
        if len(self._buf) < capacity:
            pending = bytes(self._buf[self._start : self._end])
            self._buf = bytearray(capacity)
            self._view = memoryview(self._buf)
            self._buf[: len(pending)] = pending
            self._start, self._end = 0, len(pending)

    @property
    def bound(self) -> bool:
        return self._layout is not None

    # -- receiving -------------------------------------------------------------------------

    def _ensure_buffer(self) -> None:
        """Allocate the receive buffer on first use: a small one while unbound (an inbound
        connection's handshake is 68 bytes, and a listener may hold many connections that never
        get further), the full one from ``bind``."""
        if not self._buf:
            self._buf = bytearray(256 * 1024 if self._layout is not None else _UNBOUND_BUFFER)
            self._view = memoryview(self._buf)

    def _compact(self) -> None:
        """Slide the unread tail to the front; same-size slice assignment never resizes the
        buffer, so a memoryview the transport still holds stays valid."""
        size = self._end - self._start
        self._buf[:size] = self._buf[self._start : self._end]
        self._start, self._end = 0, size

    def _free_space(self) -> None:
        self._ensure_buffer()
        if self._start == self._end:
            self._start = self._end = 0
        elif len(self._buf) - self._end < 64 * 1024 and self._start:
            self._compact()

    def _fail(self) -> None:
        """The connection is over: drop whatever input is still held."""
        self.phase = Phase.CLOSED
        self._start = self._end = 0
        self._overflow.clear()
        self._overflow_bytes = 0

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Free space at the end of the receive buffer (asyncio.BufferedProtocol.get_buffer)."""
        if self.phase is Phase.CLOSED:
            raise ProtocolError("connection already failed")
        if self._overflow:
            self._refill()
            if self._overflow:
                raise LocalError("receive_data input is still queued: read events before get_buffer")
        self._free_space()
        if self._end == len(self._buf):
            self._fail()
            raise ProtocolError("receive buffer full: peer sent more than one message can hold")
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Take ``data`` in; call ``next_event`` until NEED_DATA between calls.

        What does not fit the fixed-size buffer waits in a queue (the caller's own bytes, not
        copied when they are ``bytes``) and moves into the buffer as events are read, so a
        chunk of any size is accepted and the buffer never grows.
        """
        if self.phase is Phase.CLOSED:
            raise ProtocolError("connection already failed")
        view = memoryview(data).cast("B")
        if not view:
            return
        if not self._overflow:
            self._free_space()
            take = min(len(self._buf) - self._end, len(view))
            self._buf[self._end : self._end + take] = view[:take]
            self._end += take
            view = view[take:]
            if not view:
                return
        self._overflow.append(view if isinstance(data, bytes) else memoryview(bytes(view)))
        self._overflow_bytes += len(view)

    def _refill(self) -> bool:
        """Move queued input into the buffer; True when at least one byte moved."""
        self._ensure_buffer()
        if self._start:
            self._compact()
        moved = 0
        while self._overflow and self._end < len(self._buf):
            chunk = self._overflow[0]
            take = min(len(chunk), len(self._buf) - self._end)
            self._buf[self._end : self._end + take] = chunk[:take]
            self._end += take
            moved += take
            if take == len(chunk):
                self._overflow.popleft()
            else:
                self._overflow[0] = chunk[take:]
        self._overflow_bytes -= moved
        return moved > 0

    @property
    def buffered(self) -> int:
        return self._end - self._start + self._overflow_bytes

    @property
    def bytes_missing(self) -> int:
        """Bytes still to come before the message being received is complete (0 when the
        buffer holds no partial message, or its length prefix has not arrived yet)."""
        available = self._end - self._start
        if self.phase is not Phase.RUNNING and self.phase is not Phase.AWAIT_FIRST or available < 4 or self._overflow:
            return 0
        (length,) = _U32.unpack_from(self._buf, self._start)
        return max(0, 4 + length - available) if length <= self.max_message else 0

    def next_event(self) -> Event | NeedData:
        """The next complete message, ``NEED_DATA``, or ProtocolError (the connection is over)."""
        if self.phase is Phase.RUNNING and not self._overflow:  # the steady state, one call deep
            try:
                return self._read_message()
            except RemoteError:
                self._fail()
                raise
        if self.phase is Phase.CLOSED:
            raise ProtocolError("connection already failed")
        try:
            while True:
                event: Event | NeedData
                if self.phase is Phase.AWAIT_HANDSHAKE:
                    event = self._read_handshake()
                elif self._layout is None:
                    raise LocalError("bind() the torrent before reading messages")
                else:
                    event = self._read_message()
                if event is not NEED_DATA or not self._overflow or not self._refill():
                    return event
        except RemoteError:
            self._fail()
            raise

    def _read_handshake(self) -> m.Handshake | NeedData:
        if self._end - self._start < m.HANDSHAKE_LEN:
            buf = self._buf[self._start : self._end]
            if buf and (buf[0] != len(m.PROTOCOL) or not m.PROTOCOL.startswith(bytes(buf[1 : 1 + len(m.PROTOCOL)]))):
                raise ProtocolError("not a BitTorrent handshake")
            return NEED_DATA
        raw = bytes(self._buf[self._start : self._start + m.HANDSHAKE_LEN])
        self._start += m.HANDSHAKE_LEN
        if raw[0] != len(m.PROTOCOL) or raw[1:20] != m.PROTOCOL:
            raise ProtocolError("not a BitTorrent handshake")
        handshake = m.Handshake(info_hash=raw[28:48], peer_id=raw[48:68], reserved=raw[20:28])
        if self.info_hash is not None and handshake.info_hash != self.info_hash:
            raise ProtocolError("handshake for another torrent")
        if handshake.peer_id == self.our_peer_id:
            raise ProtocolError("connected to ourselves")
        self.peer_handshake = handshake
        ours = m.Handshake(b"", b"", self.our_reserved)
        self.fast = ours.supports_fast and handshake.supports_fast
        self.extensions = ours.supports_extensions and handshake.supports_extensions
        self.phase = Phase.AWAIT_FIRST
        return handshake

    def _read_message(self) -> m.Message | PieceRun | RequestRun | NeedData:
        available = self._end - self._start
        if available < 4:
            return NEED_DATA
        buf = self._buf
        start = self._start
        (length,) = _U32.unpack_from(buf, start)
        if length > self.max_message:
            raise ProtocolError(f"message of {length} bytes exceeds the {self.max_message}-byte limit")
        if available < 4 + length:
            return NEED_DATA
        self._start = start + 4 + length
        if length == 0:
            return self._advance(m.KeepAlive())
        kind = buf[start + 4]
        body = start + 5
        size = length - 1
        if kind == _PIECE_ID:  # the hot path, kept first and inline
            if self.phase is not Phase.RUNNING:
                self.phase = Phase.RUNNING
            if self.runs:
                return self._read_piece_run(start, length)
            index, begin = self._take_piece(start, length)
            return m.Piece(index, begin, bytes(self._view[start + 13 : start + 4 + length]))
        if kind == _REQUEST_ID and self.runs and length == 13 and self.phase is Phase.RUNNING:
            return self._read_request_run(start)
        return self._advance(self._decode(kind, body, size))

    def _read_request_run(self, start: int) -> RequestRun:
        """Every complete request message from ``start`` on, as (index, begin, length) keys,
        each checked and recorded exactly as a single Request event would be."""
        buf, end = self._buf, self._end
        run = RequestRun()
        while True:
            key: BlockKey = _U32x3.unpack_from(buf, start + 5)
            self._check_block(key[0], key[1], key[2], "request")
            self._record_request(key)
            run.append(key)
            start += 17
            if end - start < 17 or buf[start + 4] != _REQUEST_ID or _U32.unpack_from(buf, start)[0] != 13:
                return run
            self._start = start + 17

    def _take_piece(self, start: int, length: int) -> tuple[int, int]:
        """Check the piece message at ``start`` answers a request of ours, and forget it."""
        if length < 10:
            raise ProtocolError("piece message too short")
        index, begin = _U32x2.unpack_from(self._buf, start + 5)
        key = (index, begin, length - 9)
        # Values are None, so pop(key, 0) tells "was there" from "was not" in one lookup.
        if self.requests_out.pop(key, 0) is not None and self._cancelled.pop(key, 0) is not None:
            raise ProtocolError(f"unrequested block: piece {index} offset {begin} length {length - 9}")
        return index, begin

    def _read_piece_run(self, start: int, length: int) -> PieceRun:
        """Every complete piece message from ``start`` on, as borrowed (index, begin, data).

        A socket read holds several blocks; handing them over as one run costs the engine one
        call per read instead of one per block. The first message is already consumed. Each
        block is checked exactly as ``_take_piece`` checks it, inline: this loop runs 65 536
        times a GiB, so one header unpack per message and no call per block.
        """
        buf, view, end = self._buf, self._view, self._end
        max_message = self.max_message
        requests_out, cancelled = self.requests_out, self._cancelled
        unpack = _PIECE_HEADER.unpack_from
        run = PieceRun()
        append = run.append
        if length < 10:
            raise ProtocolError("piece message too short")
        _, _, index, begin = unpack(buf, start)
        while True:
            key = (index, begin, length - 9)
            # Values are None, so pop(key, 0) tells "was there" from "was not" in one lookup.
            if requests_out.pop(key, 0) is not None and cancelled.pop(key, 0) is not None:
                raise ProtocolError(f"unrequested block: piece {index} offset {begin} length {length - 9}")
            append((index, begin, view[start + 13 : start + 4 + length]))
            start += 4 + length
            if end - start < 14:  # not even a one-byte block: nothing more for this loop
                return run
            length, kind, index, begin = unpack(buf, start)
            if kind != _PIECE_ID or length < 10 or length > max_message or end - start < 4 + length:
                return run  # anything else, including a bad length, goes the general way
            self._start = start + 4 + length

    # -- blocks read straight into their destination (the driver's scatter reads) ---------

    @property
    def placing(self) -> bool:
        """True when the next bytes start a new message and nothing is queued: a driver may then
        read piece messages it expects straight into their destination (see ``place``)."""
        return self.phase is Phase.RUNNING and self._start == self._end and not self._overflow

    def expected_header(self, key: BlockKey) -> bytes:
        """The 13 bytes a piece message answering our request ``key`` starts with."""
        return self.expected_headers((key,))

    def expected_headers(self, keys: Iterable[BlockKey]) -> bytes:
        """``expected_header`` of each key, back to back (one comparison for a whole read)."""
        keys = keys if isinstance(keys, list) else list(keys)
        if not keys:
            return b""
        framed = self._frame_whole_blocks(keys, self._header_template, _PIECE_HEADER.size)
        if framed is not None:
            return framed
        indices, begins, lengths = zip(*keys)
        return b"".join(map(_PIECE_HEADER.pack, map((9).__add__, lengths), repeat(7), indices, begins))

    def _frame_whole_blocks(self, keys: list[BlockKey], template: bytes, size: int) -> bytes | None:
        """Messages for ``keys`` framed from ``template`` (those of every block of piece 0),
        when the keys are runs of consecutive whole blocks of full-size pieces: per run, a
        slice of the template and the piece index patched into bytes 5-8 of each message
        (the same place in a request and in a piece header). None when a key is anything else,
        and the caller packs each message; so both ways check the same bounds.

        A refill asks for a few whole pieces at a time and a scatter read expects runs of them:
        a slice per run instead of a ``pack`` per block.
        """
        if not template:
            return None
        full_pieces = self._num_pieces - (self._last_piece_size != self._piece_length)
        per_piece = self._piece_length // BLOCK_SIZE
        parts: list[bytes | bytearray] = []
        for index, group in groupby(keys, key=itemgetter(0)):
            run = list(group)
            count = len(run)
            begin = run[0][1]
            first, offset = divmod(begin, BLOCK_SIZE)
            if not 0 <= index < full_pieces or offset or first < 0 or first + count > per_piece:
                return None
            if list(map(itemgetter(1), run)) != list(range(begin, begin + count * BLOCK_SIZE, BLOCK_SIZE)):
                return None
            if list(map(itemgetter(2), run)) != [BLOCK_SIZE] * count:
                return None
            chunk = bytearray(template[first * size : (first + count) * size])
            for position, byte in enumerate(index.to_bytes(4, "big"), 5):
                chunk[position::size] = bytes((byte,)) * count
            parts.append(chunk)
        return b"".join(parts)

    def place(self, key: BlockKey) -> None:
        """A piece message for ``key`` arrived whole outside the buffer and its header matched
        ``expected_header``: settle it as ``_read_piece_run`` settles a block it parses."""
        self.place_many((key,))

    def place_many(self, keys: Iterable[BlockKey]) -> None:
        """``place`` each key, in order."""
        keys = keys if isinstance(keys, list) else list(keys)
        popped = list(map(self.requests_out.pop, keys, repeat(0)))  # None for each one requested
        if popped.count(None) != len(popped):
            raise LocalError(f"placed block {keys[popped.index(0)]} was not requested")

    def partial_piece(self) -> tuple[BlockKey, memoryview] | None:
        """When the buffer holds only the start of a piece message answering a request of ours,
        its key and the payload bytes so far (a view: copy them before the next read)."""
        available = self._end - self._start
        if self.phase is not Phase.RUNNING or self._overflow or available < 13:
            return None
        length, kind, index, begin = _PIECE_HEADER.unpack_from(self._buf, self._start)
        if kind != _PIECE_ID or not 10 <= length <= self.max_message or available >= 4 + length:
            return None
        key = (index, begin, length - 9)
        if key not in self.requests_out:
            return None
        return key, self._view[self._start + 13 : self._end]

    def take_partial(self, key: BlockKey) -> None:
        """The driver took the message ``partial_piece`` described: it completes it outside."""
        self.place(key)
        self._start = self._end = 0

    def _advance(self, event: _M) -> _M:
        next_phase = TRANSITIONS.get((self.phase, type(event)))
        if next_phase is None:
            raise ProtocolError(f"{type(event).__name__} not allowed in phase '{self.phase.value}'")
        if isinstance(event, FAST_ONLY) and not self.fast:
            raise ProtocolError(f"{type(event).__name__} without the fast extension")
        if isinstance(event, EXTENSION_ONLY) and not self.extensions:
            raise ProtocolError("extension message without the extension protocol")
        self.phase = next_phase
        return event

    def _fixed(self, size: int, expected: int, name: str) -> None:
        if size != expected:
            raise ProtocolError(f"{name} message has {size} payload bytes, expected {expected}")

    def _check_index(self, index: int, name: str) -> None:
        if index >= self._num_pieces:
            raise ProtocolError(f"{name} for piece {index}, torrent has {self._num_pieces}")

    def _check_block(self, index: int, begin: int, length: int, name: str) -> None:
        self._check_index(index, name)
        piece_size = self._last_piece_size if index == self._num_pieces - 1 else self._piece_length
        if length == 0 or length > self.limits.max_request_length:
            raise ProtocolError(f"{name} of {length} bytes (allowed 1..{self.limits.max_request_length})")
        if begin + length > piece_size:
            raise ProtocolError(f"{name} past the end of piece {index}")

    def _decode(self, kind: int, body: int, size: int) -> m.Message:
        """The message with id ``kind`` whose payload is ``size`` bytes at ``body``."""
        decoder = _DECODERS.get(kind)
        if decoder is None:
            raise ProtocolError(f"unknown message id {kind}")
        return decoder(self, body, size)

    def _decode_choke(self, body: int, size: int) -> m.Choke:
        self._fixed(size, 0, "choke")
        self.peer_choking = True
        if not self.fast:
            # Without BEP 6 a choke silently drops our requests; pieces already on the wire
            # may still arrive, so remember them as cancelled.
            for key in self.requests_out:
                self._remember_cancelled(key)
            self.requests_out.clear()
        return m.Choke()

    def _decode_unchoke(self, body: int, size: int) -> m.Unchoke:
        self._fixed(size, 0, "unchoke")
        self.peer_choking = False
        return m.Unchoke()

    def _decode_interested(self, body: int, size: int) -> m.Interested:
        self._fixed(size, 0, "interested")
        self.peer_interested = True
        return m.Interested()

    def _decode_not_interested(self, body: int, size: int) -> m.NotInterested:
        self._fixed(size, 0, "not_interested")
        self.peer_interested = False
        return m.NotInterested()

    def _piece_index(self, body: int, size: int, name: str) -> int:
        """The payload of have, suggest and allowed_fast: one piece index in range."""
        self._fixed(size, 4, name)
        index: int = _U32.unpack_from(self._buf, body)[0]
        self._check_index(index, name)
        return index

    def _decode_have(self, body: int, size: int) -> m.Have:
        return m.Have(self._piece_index(body, size, "have"))

    def _decode_suggest(self, body: int, size: int) -> m.Suggest:
        return m.Suggest(self._piece_index(body, size, "suggest"))

    def _decode_allowed_fast(self, body: int, size: int) -> m.AllowedFast:
        index = self._piece_index(body, size, "allowed_fast")
        if not self.fast:
            return m.AllowedFast(index)  # refused by _advance; do not grow the set first
        if index not in self.allowed_fast_in and len(self.allowed_fast_in) >= self.limits.max_allowed_fast:
            raise ProtocolError(f"more than {self.limits.max_allowed_fast} allowed_fast pieces")
        self.allowed_fast_in.add(index)
        return m.AllowedFast(index)

    def _decode_bitfield(self, body: int, size: int) -> m.BitfieldMessage:
        try:
            field = Bitfield.from_bytes(bytes(self._buf[body : body + size]), self._num_pieces)
        except RemoteError as exc:
            raise ProtocolError(str(exc)) from None
        return m.BitfieldMessage(field)

    def _block(self, body: int, size: int, name: str) -> BlockKey:
        """The payload of request, cancel and reject: a block of the torrent."""
        self._fixed(size, 12, name)
        index, begin, length = _U32x3.unpack_from(self._buf, body)
        self._check_block(index, begin, length, name)
        return index, begin, length

    def _decode_request(self, body: int, size: int) -> m.Request:
        key = self._block(body, size, "request")
        self._record_request(key)
        return m.Request(*key)

    def _decode_cancel(self, body: int, size: int) -> m.Cancel:
        key = self._block(body, size, "cancel")
        self.requests_in.pop(key, None)  # a cancel that crossed our piece is harmless
        return m.Cancel(*key)

    def _decode_reject(self, body: int, size: int) -> m.Reject:
        key = self._block(body, size, "reject")
        if key in self.requests_out:
            del self.requests_out[key]
        elif key in self._cancelled:
            del self._cancelled[key]
        elif self.fast:
            raise ProtocolError(f"reject for a block never requested: piece {key[0]} offset {key[1]}")
        return m.Reject(*key)

    def _decode_port(self, body: int, size: int) -> m.Port:
        self._fixed(size, 2, "port")
        port: int = _U16.unpack_from(self._buf, body)[0]
        return m.Port(port)

    def _decode_have_all(self, body: int, size: int) -> m.HaveAll:
        self._fixed(size, 0, "have_all")
        return m.HaveAll()

    def _decode_have_none(self, body: int, size: int) -> m.HaveNone:
        self._fixed(size, 0, "have_none")
        return m.HaveNone()

    def _decode_extended(self, body: int, size: int) -> m.Extended | m.ExtendedHandshake:
        if size < 1:
            raise ProtocolError("extension message without an id")
        if size - 1 > self.limits.max_extension_payload:
            raise ProtocolError("extension message too large")
        ext_id = self._buf[body]
        payload = bytes(self._buf[body + 1 : body + size])
        if ext_id == 0:
            return self._extension_handshake(payload)
        return m.Extended(ext_id, payload)

    def _record_request(self, key: BlockKey) -> None:
        """Owe the peer this block, within the queue cap (the caller checked its bounds)."""
        # Requests for pieces we declared allowed-fast are legal while choked (BEP 6); only the
        # queue cap bounds them.
        if self.am_choking and key[0] not in self.allowed_fast_out:
            self._choked_requests += 1
            if self._choked_requests > self.limits.max_requests_while_choked:
                raise ProtocolError(f"more than {self.limits.max_requests_while_choked} requests while choked")
            if not self.fast:
                return  # BEP 3: requests while choked are dropped, not owed
        requests_in = self.requests_in
        if key in requests_in:
            self.duplicate_requests += 1
            if self.duplicate_requests > self.limits.max_duplicate_requests:
                raise ProtocolError(f"more than {self.limits.max_duplicate_requests} requests for blocks already queued")
        elif len(requests_in) >= self.limits.max_incoming_requests:
            raise ProtocolError(f"more than {self.limits.max_incoming_requests} requests queued")
        else:
            requests_in[key] = None

    def _extension_handshake(self, payload: bytes) -> m.ExtendedHandshake:
        try:
            body = bencode.decode(payload, _HANDSHAKE_LIMITS)
        except BencodeError as exc:
            raise ProtocolError(f"bad extension handshake: {exc}") from None
        if not isinstance(body, dict):
            raise ProtocolError("extension handshake is not a dictionary")
        table = body.get(b"m", {})
        if not isinstance(table, dict):
            raise ProtocolError("extension handshake 'm' is not a map of names to ids")
        extensions: dict[str, int] = {}
        for name, number in table.items():
            if not isinstance(number, int) or not 0 <= number < 256:
                raise ProtocolError("extension handshake 'm' is not a map of names to ids")
            extensions[name.decode("utf-8", "replace")] = number
        client = body.get(b"v")
        port = body.get(b"p")
        reqq = body.get(b"reqq")
        handshake = m.ExtendedHandshake(
            extensions=extensions,
            client=client.decode("utf-8", "replace") if isinstance(client, bytes) else None,
            listen_port=port if isinstance(port, int) and 0 < port < 65536 else None,
            reqq=reqq if isinstance(reqq, int) and 0 < reqq < 1_000_000 else None,
            extra=body,
        )
        self.peer_extension_handshake = handshake
        return handshake

    def _remember_cancelled(self, key: BlockKey) -> None:
        self._cancelled[key] = None
        if len(self._cancelled) > self.limits.max_cancelled_remembered:
            self._cancelled.popitem(last=False)

    # -- sending ---------------------------------------------------------------------------

    def handshake(self) -> bytes:
        """Our handshake bytes (needs the info-hash: known up front, or from the peer's handshake)."""
        if self.info_hash is None:
            raise LocalError("info-hash unknown: read the peer's handshake first")
        self.handshake_sent = True
        return m.Handshake(self.info_hash, self.our_peer_id, self.our_reserved).encode()

    def extension_handshake(self, *, client: str, listen_port: int | None = None, extensions: dict[str, int] | None = None) -> bytes:
        """Our BEP 10 handshake. Private torrents advertise no PEX, DHT or metadata exchange;
        ``extensions`` names the ones we do speak (name -> the id peers must use with us)."""
        return self.send(
            m.ExtendedHandshake(
                extensions=dict(extensions or {}), client=client, listen_port=listen_port, reqq=self.limits.max_incoming_requests
            )
        )

    def send(self, message: m.Message) -> bytes:
        """Encode ``message`` and record what it changes on our side of the connection.

        Misuse (a message the negotiation or our own state forbids) is a ``LocalError`` raised
        before anything is recorded, so a refused send leaves the connection as it was.
        """
        if not self.handshake_sent or self.phase in (Phase.AWAIT_HANDSHAKE, Phase.CLOSED):
            raise LocalError(f"cannot send {type(message).__name__} before both handshakes")
        kind = type(message)
        self._check_send(message)
        if kind in _DESCRIBE or kind not in _KEEPS_WINDOW:
            self._described = True
        # Exact types (the messages are final); isinstance tells a type checker the fields.
        if isinstance(message, m.Choke):
            self.am_choking = True
            self._choked_requests = 0
            if not self.fast:
                self.requests_in.clear()  # BEP 3: a choke discards the peer's requests
        elif isinstance(message, m.Unchoke):
            self.am_choking = False
        elif isinstance(message, m.Interested):
            self.am_interested = True
        elif isinstance(message, m.NotInterested):
            self.am_interested = False
        elif isinstance(message, m.Request):
            self.requests_out[(message.index, message.begin, message.length)] = None
        elif isinstance(message, m.Cancel):
            key = (message.index, message.begin, message.length)
            if self.requests_out.pop(key, 0) is None:
                self._remember_cancelled(key)
        elif isinstance(message, m.Piece):
            del self.requests_in[(message.index, message.begin, len(message.data))]
        elif isinstance(message, m.Reject):
            self.requests_in.pop((message.index, message.begin, message.length), None)
        elif isinstance(message, m.AllowedFast):
            self.allowed_fast_out.add(message.index)
        return message.encode()

    def _check_send(self, message: m.Message) -> None:
        kind = type(message)
        if kind not in _SENDABLE:
            raise LocalError(f"{kind.__name__} is not a peer wire message (handshakes have their own methods)")
        if kind in _DESCRIBE and self._described:
            raise LocalError("bitfield / have_all / have_none may only be the first message")
        if kind in FAST_ONLY and not self.fast:
            raise LocalError(f"{kind.__name__} needs the fast extension, which was not negotiated")
        if kind in EXTENSION_ONLY and not self.extensions:
            raise LocalError("the peer does not support the extension protocol")
        fields = [getattr(message, name) for name in ("index", "begin", "length") if hasattr(message, name)]
        if not all(0 <= value < 1 << 32 for value in fields):
            raise LocalError(f"{kind.__name__} fields {fields} do not fit the wire's 32-bit integers")
        if isinstance(message, m.Port) and not 0 <= message.port < 1 << 16:
            raise LocalError(f"port {message.port} does not fit 16 bits")
        bound = self._layout is not None
        if isinstance(message, m.BitfieldMessage) and bound and len(message.bitfield) != self._num_pieces:
            raise LocalError(f"bitfield of {len(message.bitfield)} bits for {self._num_pieces} pieces")
        if isinstance(message, (m.Have, m.Suggest, m.AllowedFast)) and bound and message.index >= self._num_pieces:
            raise LocalError(f"{kind.__name__} for piece {message.index} of {self._num_pieces}")
        if isinstance(message, m.Request):
            if self.peer_choking and message.index not in self.allowed_fast_in:
                raise LocalError("request while choked by the peer")
            if bound:
                try:
                    self._check_block(message.index, message.begin, message.length, "request")
                except ProtocolError as exc:
                    raise LocalError(str(exc)) from None
        if isinstance(message, m.Piece) and (message.index, message.begin, len(message.data)) not in self.requests_in:
            raise LocalError("sending a piece the peer did not request")

    def send_requests(self, blocks: Iterable[tuple[int, int, int]]) -> bytes:
        """Encode many ``request`` messages at once: the refill path of a fast download.

        Same checks and bookkeeping as ``send(Request(...))`` for each block, without building a
        message object per block; one bytes object for one socket write. A refused batch
        records nothing.
        """
        if not self.handshake_sent or self.phase in (Phase.AWAIT_HANDSHAKE, Phase.CLOSED):
            raise LocalError("cannot send requests before both handshakes")
        if self._layout is None:
            raise LocalError("bind() the torrent before requesting")
        blocks = blocks if isinstance(blocks, list) else list(blocks)
        if self.peer_choking and not all(block[0] in self.allowed_fast_in for block in blocks):
            raise LocalError("request while choked by the peer")
        if not blocks:
            return b""
        out = self._frame_whole_blocks(blocks, self._request_template, _REQUEST.size)
        if out is None:
            out = self._pack_requests(blocks)
        # Recorded only once every block passed, so a refused batch records nothing.
        self.requests_out.update(dict.fromkeys(blocks))
        self._described = True
        return out

    def _pack_requests(self, blocks: list[BlockKey]) -> bytes:
        """``send_requests``' framing for any batch: bounds checked on the batch's extremes
        (C-level min/max), and block by block only when those could hide a bad one."""
        indices, begins, lengths = zip(*blocks)
        last = self._num_pieces - 1
        if min(indices) < 0 or max(indices) > last or min(lengths) <= 0 or max(lengths) > self.limits.max_request_length or min(begins) < 0:
            bad = next(b for b in blocks if not (0 <= b[0] <= last and 0 < b[2] <= self.limits.max_request_length and b[1] >= 0))
            raise LocalError(f"request {bad[0]}/{bad[1]}/{bad[2]} outside the torrent")
        piece_length, last_size = self._piece_length, self._last_piece_size
        if max(map(add, begins, lengths)) > piece_length or (last_size < piece_length and last in indices):
            for index, begin, length in blocks:
                if begin + length > (last_size if index == last else piece_length):
                    raise LocalError(f"request past the end of piece {index}")
        return b"".join(map(_REQUEST.pack, repeat(13), repeat(6), indices, begins, lengths))

    def piece_header(self, index: int, begin: int, length: int) -> bytes:
        """Header for a piece message whose data the caller writes separately (no join copy)."""
        if self.phase is Phase.CLOSED:
            raise LocalError("cannot send on a failed connection")
        if self.requests_in.pop((index, begin, length), 0) is not None:
            raise LocalError("sending a piece the peer did not request")
        self._described = True
        return _PIECE_HEADER.pack(9 + length, 7, index, begin)

    def forget_request(self, key: BlockKey) -> None:
        """We will not serve this request and, without the fast extension, cannot say so: stop
        owing it, so refused requests do not count against the peer's queue cap."""
        self.requests_in.pop(key, None)

    def frame_pieces(self, keys: list[BlockKey], blocks: list[bytes | memoryview]) -> list[bytes | memoryview]:
        """Piece messages for requested blocks, as header and data chunks for one writelines.

        The upload path's batch form of ``piece_header``: the data is never joined or copied,
        and a refused batch (a block not requested, a length that does not match, the same
        block twice) is a LocalError that records nothing.
        """
        if self.phase is Phase.CLOSED:
            raise LocalError("cannot send on a failed connection")
        requests_in = self.requests_in
        if len(keys) != len(blocks) or len(set(keys)) != len(keys):
            raise LocalError("pieces to frame must be distinct blocks, one datum each")
        for key, data in zip(keys, blocks):
            if key not in requests_in:
                raise LocalError(f"sending a piece the peer did not request: {key}")
            if len(data) != key[2]:
                raise LocalError(f"block {key} framed with {len(data)} bytes")
        pack = _PIECE_HEADER.pack
        out: list[bytes | memoryview] = []
        for key, data in zip(keys, blocks):
            del requests_in[key]
            out.append(pack(9 + key[2], 7, key[0], key[1]))
            out.append(data)
        if out:
            self._described = True
        return out


# Message id -> its decoder: each checks the payload, records what the message changes and
# returns the typed message (KeepAlive and piece have no entry: ``_read_message`` reads them).
_Decoder = Callable[[PeerWire, int, int], m.Message]
_DECODER_OF: dict[m.MessageId, _Decoder] = {
    m.MessageId.CHOKE: PeerWire._decode_choke,
    m.MessageId.UNCHOKE: PeerWire._decode_unchoke,
    m.MessageId.INTERESTED: PeerWire._decode_interested,
    m.MessageId.NOT_INTERESTED: PeerWire._decode_not_interested,
    m.MessageId.HAVE: PeerWire._decode_have,
    m.MessageId.BITFIELD: PeerWire._decode_bitfield,
    m.MessageId.REQUEST: PeerWire._decode_request,
    m.MessageId.CANCEL: PeerWire._decode_cancel,
    m.MessageId.PORT: PeerWire._decode_port,
    m.MessageId.SUGGEST: PeerWire._decode_suggest,
    m.MessageId.HAVE_ALL: PeerWire._decode_have_all,
    m.MessageId.HAVE_NONE: PeerWire._decode_have_none,
    m.MessageId.REJECT: PeerWire._decode_reject,
    m.MessageId.ALLOWED_FAST: PeerWire._decode_allowed_fast,
    m.MessageId.EXTENDED: PeerWire._decode_extended,
}
# Keyed by plain ints, so a buffer byte finds its entry without an IntEnum comparison.
_DECODERS: Final[dict[int, _Decoder]] = {int(kind): decoder for kind, decoder in _DECODER_OF.items()}
