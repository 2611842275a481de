"""A hostile or broken peer ends its own connection with a ProtocolError, and nothing grows.

Also: our own misuse of ``send`` is a LocalError that changes nothing, and the two races BEP 3
and BEP 6 leave open (a cancel or a choke crossing a piece on the wire) are not punished.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import os
import random
import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pdist import bencode
from p2pdist.bitfield import Bitfield
from p2pdist.errors import LocalError, ProtocolError, RemoteError
from p2pdist.metainfo import Layout, encode_torrent, parse_metainfo
from p2pdist.wire import messages as m
from p2pdist.wire.codec import NEED_DATA, PeerWire, WireLimits
from p2pdist.wire.state import Phase

OUR_ID = b"-PD0100-ourselves..."
PEER_ID = b"-LT2100-remotepeer.."
PIECE = 32 * 1024


@functools.lru_cache(maxsize=None)
def torrent(num_pieces: int = 4, last: int = 5000) -> tuple[Layout, bytes]:
    """A torrent of ``num_pieces`` 32 KiB pieces, the last one ``last`` bytes long."""
    total = (num_pieces - 1) * PIECE + last
    raw = bencode.encode(
        {b"length": total, b"name": b"hostile.bin", b"piece length": PIECE, b"pieces": b"\x00" * 20 * num_pieces}
    )
    meta = parse_metainfo(encode_torrent(raw))
    return Layout(meta.info), meta.info_hash


def fresh(num_pieces: int = 4, *, fast: bool = True, extensions: bool = True, limits: WireLimits = WireLimits()) -> PeerWire:
    layout, info_hash = torrent(num_pieces)
    wire = PeerWire(peer_id=OUR_ID, info_hash=info_hash, layout=layout, fast=fast, extensions=extensions, limits=limits)
    wire.handshake()
    return wire


def opened(num_pieces: int = 4, reserved: bytes | None = None, **options: object) -> PeerWire:
    """After both handshakes; ``reserved`` is what the peer advertised."""
    wire = fresh(num_pieces, **options)  # type: ignore[arg-type]
    info_hash = torrent(num_pieces)[1]
    wire.receive_data(m.Handshake(info_hash, PEER_ID, reserved if reserved is not None else m.make_reserved()).encode())
    assert isinstance(wire.next_event(), m.Handshake)
    return wire


def feed(wire: PeerWire, *messages: object) -> list[object]:
    wire.receive_data(b"".join(msg if isinstance(msg, bytes) else msg.encode() for msg in messages))  # type: ignore[attr-defined]
    return drain(wire)


def drain(wire: PeerWire) -> list[object]:
    events = []
    for _ in range(1_000_000):
        event = wire.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
    raise AssertionError("next_event never returned NEED_DATA")


def fails(wire: PeerWire, data: bytes, match: str) -> None:
    """The bytes end the connection with a ProtocolError, and it stays ended."""
    with pytest.raises(ProtocolError, match=match):
        feed(wire, data)
    assert wire.phase is Phase.CLOSED
    with pytest.raises(ProtocolError, match="already failed"):
        wire.next_event()
    with pytest.raises(ProtocolError):
        wire.receive_data(m.KeepAlive().encode())
    with pytest.raises(ProtocolError):
        wire.get_buffer()
    with pytest.raises(LocalError):
        wire.send(m.KeepAlive())


def seeded_peer(num_pieces: int = 4, **options: object) -> PeerWire:
    """The peer is a seed that unchoked us."""
    wire = opened(num_pieces, **options)  # type: ignore[arg-type]
    first = m.HaveAll() if wire.fast else m.BitfieldMessage(Bitfield.full(num_pieces))
    feed(wire, first, m.Unchoke())
    return wire


def serving(**options: object) -> PeerWire:
    """We are a seed and unchoked the peer."""
    wire = opened(**options)  # type: ignore[arg-type]
    wire.send(m.HaveAll() if wire.fast else m.BitfieldMessage(Bitfield.full(4)))
    wire.send(m.Unchoke())
    return wire


def test_protocol_error_is_the_peers_fault() -> None:
    assert issubclass(ProtocolError, RemoteError) and not issubclass(LocalError, RemoteError)


def test_every_limit_has_its_reason_next_to_it() -> None:
    source = inspect.getsource(WireLimits)
    lines = source.splitlines()
    fields = [node for node in ast.parse(source).body[0].body if isinstance(node, ast.AnnAssign)]  # type: ignore[attr-defined]
    assert {f.target.id for f in fields} == set(WireLimits.__dataclass_fields__)  # type: ignore[attr-defined]
    for node in fields:
        assert lines[node.lineno - 2].strip().startswith("#"), f"{node.target.id} has no reason"  # type: ignore[attr-defined]
    limits = WireLimits()
    assert limits.max_request_length == 16 * 1024
    assert 0 < limits.max_incoming_requests <= limits.max_requests_while_choked * 2


# -- length prefix ------------------------------------------------------------------------------


def test_frame_cap_follows_geometry() -> None:
    small = opened()
    assert small.max_message == 2 + 64 * 1024  # an extension message is the largest legal frame
    big = opened(num_pieces=1_000_000, reserved=m.make_reserved())
    assert big.max_message == 1 + 125_000  # a million-piece bitfield


@pytest.mark.parametrize("length", [2**32 - 1, 2**31, 10 * 1024 * 1024, 2 + 64 * 1024 + 1])
def test_oversized_length_prefix_fails_on_its_four_bytes(length: int) -> None:
    wire = opened()
    # Only the prefix: the codec must not wait for (or buffer) the body it announces.
    fails(wire, struct.pack(">I", length), "exceeds the 65538-byte limit")


def test_length_exactly_at_cap_is_accepted() -> None:
    wire = opened()
    payload = b"z" * (64 * 1024)
    assert feed(wire, m.Extended(9, payload)) == [m.Extended(9, payload)]


def test_bitfield_for_a_big_torrent_is_not_over_the_cap() -> None:
    wire = opened(num_pieces=1_000_000)
    field = Bitfield(1_000_000, range(0, 1_000_000, 7))
    assert feed(wire, m.BitfieldMessage(field)) == [m.BitfieldMessage(field)]


# -- memory stays bounded ----------------------------------------------------------------------


def test_junk_stream_raises_at_once_and_buffer_stays_bounded() -> None:
    wire = fresh()
    junk = random.Random(1).randbytes(8 * 1024 * 1024)
    chunks = 0
    with pytest.raises(ProtocolError, match="not a BitTorrent handshake"):
        for start in range(0, len(junk), 64 * 1024):
            chunks += 1
            wire.receive_data(junk[start : start + 64 * 1024])
            assert wire.buffered <= 256 * 1024
            wire.next_event()
    assert chunks == 1
    assert wire.phase is Phase.CLOSED


def test_junk_after_a_handshake_raises_within_one_frame() -> None:
    wire = opened()
    junk = random.Random(2).randbytes(4 * 1024 * 1024)
    with pytest.raises(ProtocolError):
        for start in range(0, len(junk), 1000):
            wire.receive_data(junk[start : start + 1000])
            assert wire.buffered < 4 + wire.max_message
            drain(wire)
    assert wire.phase is Phase.CLOSED


def test_one_huge_junk_read_is_not_copied() -> None:
    """A caller that hands over megabytes at once: the codec keeps no copy of them."""
    wire = opened()
    junk = b"\x00\x10\x00\x00" + bytes(8 * 1024 * 1024)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        wire.receive_data(junk)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024
    with pytest.raises(ProtocolError, match="exceeds"):
        wire.next_event()
    assert wire.buffered == 0  # queued input is dropped with the connection


def test_stalled_partial_handshake_waits_with_bounded_memory() -> None:
    wire = fresh()
    handshake = m.Handshake(torrent()[1], PEER_ID).encode()
    for i in range(len(handshake) - 1):
        wire.receive_data(handshake[i : i + 1])
        assert wire.next_event() is NEED_DATA
    assert wire.buffered == len(handshake) - 1
    for _ in range(1000):  # a peer that never finishes: polling costs nothing
        assert wire.next_event() is NEED_DATA
    assert wire.buffered == len(handshake) - 1
    wire.receive_data(handshake[-1:])
    assert isinstance(wire.next_event(), m.Handshake)


@pytest.mark.parametrize("position", [0, 1, 5, 19])
def test_bad_handshake_prefix_fails_before_68_bytes(position: int) -> None:
    handshake = bytearray(m.Handshake(torrent()[1], PEER_ID).encode())
    handshake[position] ^= 0x20
    wire = fresh()
    wire.receive_data(bytes(handshake[: position + 1]))
    with pytest.raises(ProtocolError, match="not a BitTorrent handshake"):
        wire.next_event()


def test_stalled_partial_message_is_bounded_by_the_frame_cap() -> None:
    wire = opened()
    wire.receive_data(struct.pack(">IB", 2 + 64 * 1024, 20) + b"\x09")
    for _ in range(64):
        wire.receive_data(b"y" * 1000)
        assert wire.next_event() is NEED_DATA
    assert wire.buffered == 5 + 1 + 64_000


def test_reader_that_never_reads_events_cannot_grow_the_buffer() -> None:
    """BufferedProtocol path: once the fixed buffer is full, get_buffer refuses more."""
    wire = opened()
    keepalives = m.KeepAlive().encode() * (1024 * 1024)
    offered = 0
    with pytest.raises(ProtocolError, match="buffer full"):
        for _ in range(1000):
            target = wire.get_buffer(-1)
            take = min(len(target), len(keepalives) - offered)
            target[:take] = keepalives[offered : offered + take]
            wire.buffer_updated(take)
            offered += take
    assert offered < 1024 * 1024 and wire.phase is Phase.CLOSED


def test_big_reads_after_a_partial_message_are_legal() -> None:
    """A legal stream in 256 KiB reads (asyncio's read size) on top of a partial frame.

    The codec used to call that a full buffer and drop an honest seed.
    """
    pieces = 150
    wire = seeded_peer(num_pieces=pieces)
    keys = [(i, b, 16384) for i in range(pieces - 1) for b in (0, 16384)] + [(pieces - 1, 0, 5000)]
    for key in keys:
        wire.send(m.Request(*key))
    stream = b"".join(m.Piece(i, b, bytes([i]) * n).encode() for i, b, n in keys)  # ~4.9 MB
    received = 0

    def check(events: list[object]) -> int:
        for event in events:
            assert isinstance(event, m.Piece) and event.data == bytes([event.index]) * len(event.data)
        return len(events)

    wire.receive_data(stream[:10_000])
    received += check(drain(wire))
    tracemalloc.start()
    try:
        for start in range(10_000, len(stream), 256 * 1024):
            wire.receive_data(stream[start : start + 256 * 1024])
            received += check(drain(wire))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert received == len(keys)
    assert peak < 1024 * 1024  # one read and one event at a time, never the stream
    assert wire.requests_out == {} and wire.buffered == 0


def test_receive_data_queue_then_get_buffer() -> None:
    """Bytes queued by receive_data come first when a driver switches to get_buffer."""
    wire = opened()
    big = m.Extended(3, b"a" * 60_000).encode() * 6  # more than the buffer holds
    wire.receive_data(big)
    with pytest.raises(LocalError, match="still queued"):
        wire.get_buffer()
    events = drain(wire)
    assert events == [m.Extended(3, b"a" * 60_000)] * 6
    target = wire.get_buffer()
    raw = m.Have(1).encode()
    target[: len(raw)] = raw
    wire.buffer_updated(len(raw))
    assert wire.next_event() == m.Have(1)


# -- bitfields and indices (model-based) -------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(num_pieces=st.integers(1, 40), payload=st.binary(max_size=8))
def test_bitfield_payload_rules(num_pieces: int, payload: bytes) -> None:
    wire = opened(num_pieces)
    expected_len = (num_pieces + 7) // 8
    spare = expected_len * 8 - num_pieces
    valid = len(payload) == expected_len and not (spare and payload[-1] & ((1 << spare) - 1))
    if valid:
        (event,) = feed(wire, struct.pack(">IB", 1 + len(payload), 5) + payload)
        assert event.bitfield.to_bytes() == payload  # type: ignore[attr-defined]
        assert list(event.bitfield) == [i for i in range(num_pieces) if payload[i // 8] & (0x80 >> (i % 8))]  # type: ignore[attr-defined]
        fails(wire, struct.pack(">IB", 1 + len(payload), 5) + payload, "not allowed")  # never twice
    else:
        fails(wire, struct.pack(">IB", 1 + len(payload), 5) + payload, "bitfield")


@settings(max_examples=150, deadline=None)
@given(num_pieces=st.integers(1, 40), index=st.integers(0, 2**32 - 1) | st.integers(0, 45), kind=st.sampled_from([4, 0x0D, 0x11]))
def test_index_rules(num_pieces: int, index: int, kind: int) -> None:
    wire = opened(num_pieces)
    feed(wire, m.HaveNone())
    data = struct.pack(">IBI", 5, kind, index)
    if index < num_pieces:
        (event,) = feed(wire, data)
        assert event.index == index  # type: ignore[attr-defined]
    else:
        fails(wire, data, f"for piece {index}, torrent has {num_pieces}")


@st.composite
def requests(draw: st.DrawFn) -> tuple[int, int, int]:
    near = st.integers(0, 40_000)
    return (
        draw(st.integers(0, 5) | st.integers(0, 2**32 - 1)),
        draw(near | st.integers(0, 2**32 - 1)),
        draw(st.integers(0, 17_000) | st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=200, deadline=None)
@given(request=requests(), kind=st.sampled_from([m.Request, m.Cancel, m.Reject]))
def test_block_reference_rules(request: tuple[int, int, int], kind: type) -> None:
    layout = torrent()[0]
    index, begin, length = request
    valid = index < 4 and 0 < length <= 16384 and begin + length <= layout.piece_size(index)
    wire = serving()
    if kind is m.Reject and valid:
        wire.requests_out[request] = None  # a reject must answer one of our requests
    data = kind(*request).encode()
    if valid:
        assert feed(wire, data) == [kind(*request)]
        if kind is m.Request:
            assert request in wire.requests_in
    else:
        fails(wire, data, "piece|bytes")


# -- request floods ----------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
def test_request_queue_cap_default(fast: bool) -> None:
    wire = serving(reserved=m.make_reserved(fast=fast))
    keys = [(i, b, 16) for i in range(4) for b in range(0, 2000, 16)][:500]
    feed(wire, *(m.Request(*key) for key in keys))
    assert len(wire.requests_in) == 500
    feed(wire, m.Request(*keys[0]))  # a repeat takes no new slot
    fails(wire, m.Request(3, 4000, 16).encode(), "more than 500 requests queued")


def test_repeated_requests_are_counted_and_capped() -> None:
    """Asking again for a block still owed takes no slot, but each repeat is counted: a peer
    that repeats itself without reading is ended, however few distinct blocks it names."""
    wire = serving(limits=WireLimits(max_duplicate_requests=10))
    feed(wire, m.Request(0, 0, 16))
    feed(wire, *(m.Request(0, 0, 16) for _ in range(10)))
    assert wire.duplicate_requests == 10 and len(wire.requests_in) == 1
    wire.send(m.Piece(0, 0, bytes(16)))
    feed(wire, m.Request(0, 0, 16))  # asked again after it was served: a new request
    assert wire.duplicate_requests == 10
    fails(wire, m.Request(0, 0, 16).encode(), "requests for blocks already queued")


def test_repeated_requests_default_cap_in_runs() -> None:
    layout, info_hash = torrent(4)
    wire = PeerWire(peer_id=OUR_ID, info_hash=info_hash, layout=layout, runs=True)
    wire.handshake()
    feed(wire, m.Handshake(info_hash, PEER_ID, m.make_reserved()).encode())
    wire.send(m.HaveAll())
    wire.send(m.Unchoke())
    fails(wire, m.Request(0, 0, 16).encode() * 502, "more than 500 requests for blocks already queued")


def test_unbound_connection_holds_a_small_buffer() -> None:
    """A listener may hold many connections that never finish a handshake: each one costs a
    few KiB until the handshake names a torrent, then the full buffer."""
    layout, info_hash = torrent(4)
    wire = PeerWire(peer_id=OUR_ID)
    assert len(wire.get_buffer()) <= 4096
    wire.receive_data(m.Handshake(info_hash, PEER_ID, m.make_reserved()).encode() + m.HaveAll().encode())
    assert isinstance(wire.next_event(), m.Handshake)
    wire.bind(layout, info_hash)
    wire.handshake()
    assert len(wire.get_buffer()) >= 200 * 1024
    assert drain(wire) == [m.HaveAll()]


def test_answered_requests_free_their_slot() -> None:
    wire = serving(limits=WireLimits(max_incoming_requests=2))
    for begin in range(0, 100 * 16, 16):
        feed(wire, m.Request(0, begin, 16), m.Request(1, begin, 16))
        wire.send(m.Piece(0, begin, bytes(16)))
        wire.send(m.Reject(1, begin, 16))
    assert wire.requests_in == {}


@pytest.mark.parametrize("fast", [True, False])
def test_requests_while_choked_default_cap(fast: bool) -> None:
    wire = opened(reserved=m.make_reserved(fast=fast))
    wire.send(m.BitfieldMessage(Bitfield.full(4)))
    keys = [(i, b, 16) for i in range(4) for b in range(0, 2000, 16)][:500]
    feed(wire, *(m.Request(*key) for key in keys))
    # BEP 6: while choked every request is owed a reject; BEP 3: it is simply dropped.
    assert len(wire.requests_in) == (500 if fast else 0)
    fails(wire, m.Request(3, 4000, 16).encode(), "more than 500 requests while choked")


def test_choke_resets_the_choked_budget_and_drops_plain_requests() -> None:
    wire = serving(reserved=m.make_reserved(fast=False), limits=WireLimits(max_requests_while_choked=3))
    feed(wire, m.Request(0, 0, 16384), m.Request(0, 16384, 16384))
    assert len(wire.requests_in) == 2
    wire.send(m.Choke())
    assert wire.requests_in == {}  # BEP 3: a choke discards them
    with pytest.raises(LocalError):
        wire.send(m.Piece(0, 0, bytes(16384)))
    for _ in range(3):
        feed(wire, *(m.Request(1, b, 1024) for b in (0, 1024, 2048)))
        wire.send(m.Unchoke())
        wire.send(m.Choke())
    fails(wire, b"".join(m.Request(1, b, 1024).encode() for b in range(0, 4096, 1024)), "while choked")


def test_fast_choke_keeps_requests_owed() -> None:
    wire = serving()
    feed(wire, m.Request(0, 0, 16384), m.Request(1, 0, 16384))
    wire.send(m.Choke())
    assert list(wire.requests_in) == [(0, 0, 16384), (1, 0, 16384)]  # BEP 6: each gets a reject or a piece
    wire.send(m.Reject(0, 0, 16384))
    wire.send(m.Piece(1, 0, bytes(16384)))
    assert wire.requests_in == {}


def test_allowed_fast_requests_do_not_use_the_choked_budget() -> None:
    wire = opened(limits=WireLimits(max_requests_while_choked=2, max_incoming_requests=50))
    wire.send(m.HaveAll())
    wire.send(m.AllowedFast(2))
    feed(wire, *(m.Request(2, b, 512) for b in range(0, 32 * 512, 512)))  # 32 legal requests
    assert len(wire.requests_in) == 32
    feed(wire, m.Request(0, 0, 16), m.Request(0, 16, 16))
    fails(wire, m.Request(0, 32, 16).encode(), "more than 2 requests while choked")


def test_allowed_fast_set_is_capped_by_distinct_pieces() -> None:
    wire = opened(num_pieces=20, limits=WireLimits(max_allowed_fast=3))
    feed(wire, *(m.AllowedFast(i) for i in (0, 1, 2, 2, 1, 0)))
    assert wire.allowed_fast_in == {0, 1, 2}
    fails(wire, m.AllowedFast(3).encode(), "more than 3 allowed_fast")


# -- pieces, rejects and the races -------------------------------------------------------------


def test_unrequested_piece() -> None:
    wire = seeded_peer()
    fails(wire, m.Piece(1, 0, b"x" * 100).encode(), "unrequested block: piece 1 offset 0 length 100")


def test_cancelled_request_whose_piece_still_arrives_is_accepted_once() -> None:
    for fast in (True, False):
        wire = seeded_peer(reserved=m.make_reserved(fast=fast))
        wire.send(m.Request(1, 0, 16384))
        wire.send(m.Cancel(1, 0, 16384))
        assert wire.requests_out == {}
        assert feed(wire, m.Piece(1, 0, bytes(16384))) == [m.Piece(1, 0, bytes(16384))]
        fails(wire, m.Piece(1, 0, bytes(16384)).encode(), "unrequested")


def test_cancelled_request_answered_by_reject_under_fast() -> None:
    wire = seeded_peer()
    wire.send(m.Request(1, 0, 16384))
    wire.send(m.Cancel(1, 0, 16384))
    assert feed(wire, m.Reject(1, 0, 16384)) == [m.Reject(1, 0, 16384)]
    fails(wire, m.Piece(1, 0, bytes(16384)).encode(), "unrequested")


def test_piece_after_plain_choke_is_accepted_once() -> None:
    wire = seeded_peer(reserved=m.make_reserved(fast=False))
    for begin in (0, 16384):
        wire.send(m.Request(2, begin, 16384))
    assert feed(wire, m.Choke()) == [m.Choke()]
    assert wire.requests_out == {}  # BEP 3: the choke dropped them
    with pytest.raises(LocalError, match="choked"):
        wire.send(m.Request(2, 0, 16384))
    assert feed(wire, m.Piece(2, 16384, bytes(16384))) == [m.Piece(2, 16384, bytes(16384))]
    fails(wire, m.Piece(2, 16384, bytes(16384)).encode(), "unrequested block")


def test_piece_after_fast_choke_is_still_expected() -> None:
    wire = seeded_peer()
    wire.send(m.Request(2, 0, 16384))
    feed(wire, m.Choke())
    assert list(wire.requests_out) == [(2, 0, 16384)]  # BEP 6: choke no longer drops requests
    assert feed(wire, m.Piece(2, 0, bytes(16384))) == [m.Piece(2, 0, bytes(16384))]


def test_forgotten_cancellations_are_bounded() -> None:
    wire = seeded_peer(limits=WireLimits(max_cancelled_remembered=3))
    keys = [(0, b, 1024) for b in range(0, 5 * 1024, 1024)]
    for key in keys:
        wire.send(m.Request(*key))
        wire.send(m.Cancel(*key))
    assert feed(wire, m.Piece(0, 4096, bytes(1024))) == [m.Piece(0, 4096, bytes(1024))]
    fails(wire, m.Piece(0, 0, bytes(1024)).encode(), "unrequested")  # the oldest was forgotten


def test_reject_without_request_under_fast() -> None:
    wire = seeded_peer()
    fails(wire, m.Reject(2, 0, 16384).encode(), "reject for a block never requested")


@pytest.mark.parametrize("message", [m.HaveAll(), m.HaveNone(), m.Suggest(1), m.AllowedFast(1), m.Reject(0, 0, 16384)], ids=repr)
def test_fast_messages_without_fast(message: object) -> None:
    wire = opened(reserved=m.make_reserved(fast=False))
    if isinstance(message, m.Reject):
        feed(wire, m.BitfieldMessage(Bitfield.full(4)), m.Unchoke())
        wire.send(m.Request(0, 0, 16384))
    fails(wire, message.encode(), "without the fast extension")  # type: ignore[attr-defined]
    assert wire.allowed_fast_in == set()


@pytest.mark.parametrize("message", [m.Extended(1, b""), m.ExtendedHandshake(client="x")], ids=repr)
def test_extension_messages_without_the_bit(message: object) -> None:
    wire = opened(reserved=m.make_reserved(extensions=False))
    fails(wire, message.encode(), "without the extension protocol")  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", [10, 11, 12, 18, 19, 21, 22, 23, 0x80, 255])
def test_unknown_message_ids(kind: int) -> None:
    fails(opened(), struct.pack(">IB", 1, kind), f"unknown message id {kind}")


# -- extension handshake garbage -----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=200) | st.builds(lambda s: b"d1:m" + s, st.binary(max_size=60)))
def test_extension_handshake_garbage_is_a_protocol_error(payload: bytes) -> None:
    wire = opened()
    try:
        events = feed(wire, struct.pack(">IBB", 2 + len(payload), 20, 0) + payload)
    except ProtocolError:
        assert wire.phase is Phase.CLOSED
        return
    (event,) = events
    assert isinstance(event, m.ExtendedHandshake)
    assert all(isinstance(k, str) and 0 <= v < 256 for k, v in event.extensions.items())
    assert event.listen_port is None or 0 < event.listen_port < 65536


def test_extension_handshake_odd_but_legal_fields() -> None:
    body = bencode.encode({b"m": {b"\xff\xfe": 1}, b"p": 70000, b"reqq": -5, b"v": 7, b"zz": [b"x"]})
    (event,) = feed(opened(), struct.pack(">IBB", 2 + len(body), 20, 0) + body)
    assert isinstance(event, m.ExtendedHandshake)
    assert (event.listen_port, event.reqq, event.client) == (None, None, None)
    assert list(event.extensions.values()) == [1]


# -- fuzz: only ProtocolError escapes ----------------------------------------------------------


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 25) | st.integers(0, 255))
    payload = draw(st.binary(max_size=30))
    length = draw(st.just(1 + len(payload)) | st.integers(0, 70_000))
    return struct.pack(">IB", length, kind) + payload


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(frames() | st.binary(max_size=40), max_size=12),
    fast=st.booleans(),
    ext=st.booleans(),
    phase=st.sampled_from(["handshake", "first", "running"]),
)
def test_fuzz_only_protocol_errors_escape(chunks: list[bytes], fast: bool, ext: bool, phase: str) -> None:
    reserved = m.make_reserved(fast=fast, extensions=ext)
    if phase == "handshake":
        wire = fresh()
    elif phase == "first":
        wire = opened(reserved=reserved)
    else:
        wire = seeded_peer(reserved=reserved)
        wire.send(m.Request(0, 0, 16384))
    try:
        for chunk in chunks:
            wire.receive_data(chunk)
            drain(wire)
    except ProtocolError:
        assert wire.phase is Phase.CLOSED
        with pytest.raises(ProtocolError):
            wire.next_event()
    else:
        assert wire.phase is not Phase.CLOSED
        assert wire.buffered < 4 + 70_000 + 68


# -- handshakes --------------------------------------------------------------------------------


def test_handshake_checks() -> None:
    layout, info_hash = torrent()
    good = m.Handshake(info_hash, PEER_ID)
    fails(fresh(), b"\x13BitTorrent protocoX" + good.encode()[20:], "not a BitTorrent handshake")
    fails(fresh(), m.Handshake(hashlib.sha1(b"other").digest(), PEER_ID).encode(), "another torrent")
    fails(fresh(), m.Handshake(info_hash, OUR_ID).encode(), "ourselves")
    inbound = PeerWire(peer_id=OUR_ID)
    inbound.receive_data(m.Handshake(os.urandom(20), OUR_ID).encode())
    with pytest.raises(ProtocolError, match="ourselves"):
        inbound.next_event()


def test_inbound_must_bind_before_reading_messages() -> None:
    layout, info_hash = torrent()
    wire = PeerWire(peer_id=OUR_ID)
    with pytest.raises(LocalError):
        wire.handshake()  # no info-hash yet
    wire.receive_data(m.Handshake(info_hash, PEER_ID).encode() + m.HaveNone().encode())
    assert isinstance(wire.next_event(), m.Handshake)
    with pytest.raises(LocalError, match="bind"):
        wire.next_event()
    assert wire.phase is Phase.AWAIT_FIRST  # our mistake does not end the connection
    wire.bind(layout, info_hash)
    wire.handshake()
    assert wire.next_event() == m.HaveNone()


# -- our own misuse: LocalError, nothing recorded --------------------------------------------


def test_send_before_handshakes() -> None:
    wire = fresh()
    with pytest.raises(LocalError, match="before both handshakes"):
        wire.send(m.Interested())
    layout, info_hash = torrent()
    unsent = PeerWire(peer_id=OUR_ID, info_hash=info_hash, layout=layout)
    unsent.receive_data(m.Handshake(info_hash, PEER_ID).encode())
    unsent.next_event()
    with pytest.raises(LocalError):
        unsent.send(m.Interested())  # our own handshake was never sent
    with pytest.raises(LocalError, match="20 bytes"):
        PeerWire(peer_id=b"short")


def test_request_while_choked_needs_allowed_fast() -> None:
    wire = opened()
    with pytest.raises(LocalError, match="choked"):
        wire.send(m.Request(1, 0, 16384))
    assert wire.requests_out == {}
    feed(wire, m.AllowedFast(1))
    wire.send(m.Request(1, 0, 16384))
    with pytest.raises(LocalError, match="choked"):
        wire.send(m.Request(2, 0, 16384))
    assert list(wire.requests_out) == [(1, 0, 16384)]


def test_refused_send_changes_nothing() -> None:
    wire = opened()
    with pytest.raises(LocalError):
        wire.send(m.Request(1, 0, 16384))  # choked
    with pytest.raises(LocalError):
        wire.send(m.Piece(0, 0, b"x"))  # never requested
    wire.send(m.BitfieldMessage(Bitfield(4)))  # still our first message
    assert wire.am_choking and wire.requests_out == {}


def test_bitfield_only_first() -> None:
    wire = opened()
    wire.send(m.ExtendedHandshake())
    wire.send(m.AllowedFast(0))
    wire.send(m.KeepAlive())
    wire.send(m.HaveNone())
    for late in (m.BitfieldMessage(Bitfield(4)), m.HaveAll(), m.HaveNone()):
        with pytest.raises(LocalError, match="first message"):
            wire.send(late)
    other = opened()
    other.send(m.Interested())
    with pytest.raises(LocalError, match="first message"):
        other.send(m.BitfieldMessage(Bitfield(4)))


def test_piece_never_requested() -> None:
    wire = serving()
    with pytest.raises(LocalError, match="did not request"):
        wire.send(m.Piece(0, 0, bytes(16384)))
    with pytest.raises(LocalError, match="did not request"):
        wire.piece_header(0, 0, 16384)
    feed(wire, m.Request(0, 0, 16384))
    with pytest.raises(LocalError):
        wire.send(m.Piece(0, 0, bytes(100)))  # wrong length is another block
    wire.piece_header(0, 0, 16384)
    with pytest.raises(LocalError):
        wire.piece_header(0, 0, 16384)  # answered once only


def test_negotiation_is_respected_when_sending() -> None:
    plain = opened(reserved=m.make_reserved(fast=False, extensions=False))
    for message in (m.HaveAll(), m.HaveNone(), m.Suggest(0), m.AllowedFast(0), m.Reject(0, 0, 1), m.Extended(1, b""), m.ExtendedHandshake()):
        with pytest.raises(LocalError):
            plain.send(message)
    with pytest.raises(LocalError):
        plain.extension_handshake(client="x")
    assert plain.allowed_fast_out == set()
    plain.send(m.BitfieldMessage(Bitfield(4)))  # none of the refusals used up the first message


@pytest.mark.parametrize(
    "message",
    [
        m.Request(4, 0, 16384),
        m.Request(0, 0, 16385),
        m.Request(0, 0, 0),
        m.Request(3, 4096, 905),
        m.Request(0, -1, 10),
        m.Have(4),
        m.Have(-1),
        m.Suggest(9),
        m.AllowedFast(2**32),
        m.Port(70_000),
        m.BitfieldMessage(Bitfield(5)),
        m.Handshake(b"\x00" * 20, PEER_ID),
        "not a message",
    ],
    ids=repr,
)
def test_send_refuses_what_a_peer_would_refuse(message: object) -> None:
    wire = seeded_peer()
    with pytest.raises(LocalError):
        wire.send(message)
    assert wire.requests_out == {}
