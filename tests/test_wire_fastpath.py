"""The codec's fast paths give the same bytes and state as the one-message-at-a-time API."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pdist.errors import LocalError, ProtocolError
from p2pdist.metainfo import Layout, Metainfo
from p2pdist.wire import messages as m
from p2pdist.wire.codec import NEED_DATA, PeerWire, PieceRun, RequestRun, WireLimits
from tests.support.torrents import make_torrent

_, META = make_torrent({"a.bin": bytes(100_000)}, single=True, name="a.bin", piece_length=32 * 1024)
LAYOUT = Layout(META.info)


def _pair(meta: Metainfo = META, layout: Layout = LAYOUT, **options: object) -> tuple[PeerWire, PeerWire]:
    a = PeerWire(peer_id=b"A" * 20, info_hash=meta.info_hash, layout=layout, **options)  # type: ignore[arg-type]
    b = PeerWire(peer_id=b"B" * 20, info_hash=meta.info_hash, layout=layout, **options)  # type: ignore[arg-type]
    b.receive_data(a.handshake())
    a.receive_data(b.handshake())
    assert isinstance(a.next_event(), m.Handshake) and isinstance(b.next_event(), m.Handshake)
    a.receive_data(b.send(m.HaveAll()) + b.send(m.Unchoke()))
    while a.next_event() is not NEED_DATA:
        pass
    return a, b


ALL_BLOCKS = [
    (index, number * 16384, LAYOUT.block_size(index, number))
    for index in range(LAYOUT.num_pieces)
    for number in range(LAYOUT.blocks_in_piece(index))
]
blocks = st.lists(st.sampled_from(ALL_BLOCKS), max_size=20, unique=True)


@settings(max_examples=60)
@given(blocks)
def test_send_requests_matches_send(chosen: list[tuple[int, int, int]]) -> None:
    one, _ = _pair()
    many, _ = _pair()
    expected = b"".join(one.send(m.Request(*block)) for block in chosen)
    assert many.send_requests(chosen) == expected
    assert list(many.requests_out) == list(one.requests_out)


def test_send_requests_refuses_what_send_refuses() -> None:
    wire, _ = _pair()
    for bad in [(LAYOUT.num_pieces, 0, 16384), (0, 0, 16385), (0, 32 * 1024 - 10, 16384), (0, 0, 0)]:
        with pytest.raises(LocalError):
            wire.send_requests([bad])
    assert not wire.requests_out
    wire.receive_data(m.Choke().encode())
    assert isinstance(wire.next_event(), m.Choke)
    with pytest.raises(LocalError, match="choked"):
        wire.send_requests([(0, 0, 16384)])


def _valid_request(index: int, begin: int, length: int) -> bool:
    return 0 <= index < LAYOUT.num_pieces and 0 < length <= 16384 and begin >= 0 and begin + length <= LAYOUT.piece_size(index)


any_block = st.tuples(st.integers(-1, LAYOUT.num_pieces), st.integers(-16384, 3 * 16384), st.integers(-1, 16385))


@settings(max_examples=150)
@given(st.lists(st.sampled_from(ALL_BLOCKS) | any_block, max_size=12))
def test_send_requests_refuses_a_batch_with_any_bad_block(chosen: list[tuple[int, int, int]]) -> None:
    """The batch's bounds are checked on its extremes first: one bad block anywhere, the last
    piece's short end included, still refuses the whole batch and records nothing."""
    wire, _ = _pair()
    if all(_valid_request(*block) for block in chosen):
        assert len(wire.send_requests(chosen)) == 17 * len(chosen)
        assert list(wire.requests_out) == list(dict.fromkeys(chosen))
    else:
        with pytest.raises(LocalError):
            wire.send_requests(chosen)
        assert not wire.requests_out


def _events(wire: PeerWire) -> list[object]:
    out = []
    for _ in range(10_000):
        event = wire.next_event()
        if event is NEED_DATA:
            return out
        out.append(list(event) if isinstance(event, (PieceRun, RequestRun)) else event)
    raise AssertionError("codec never asked for more data")


def _payload(key: tuple[int, int, int]) -> bytes:
    return bytes([key[0] * 7 + key[1] // 16384 & 0xFF]) * key[2]


@settings(max_examples=60)
@given(blocks, st.lists(st.integers(min_value=1, max_value=40_000), min_size=1, max_size=8))
def test_piece_runs_carry_the_same_blocks_as_single_events(chosen: list[tuple[int, int, int]], cuts: list[int]) -> None:
    single, single_peer = _pair()
    batched, batched_peer = _pair(runs=True)
    stream = b""
    for wire, peer in ((single, single_peer), (batched, batched_peer)):
        peer.receive_data(wire.send_requests(chosen))
        _events(peer)
        stream = b"".join(peer.piece_header(*key) + _payload(key) for key in chosen)
    single.receive_data(stream)
    expected = [(e.index, e.begin, e.data) for e in _events(single)]  # type: ignore[attr-defined]
    got: list[tuple[int, int, bytes]] = []
    position = 0
    for cut in [*cuts, len(stream)]:
        piece_of_stream = stream[position : position + cut]
        position += len(piece_of_stream)
        batched.receive_data(piece_of_stream)
        for run in _events(batched):
            assert isinstance(run, list) and run, "piece messages come out as non-empty runs"
            got += [(index, begin, bytes(data)) for index, begin, data in run]  # copy while borrowed
    assert got == expected == [(i, b, _payload((i, b, n))) for i, b, n in chosen]
    assert not batched.requests_out and not single.requests_out


def test_a_run_holds_every_complete_piece_message_of_one_read() -> None:
    wire, peer = _pair(runs=True)
    keys = ALL_BLOCKS[:5]
    peer.receive_data(wire.send_requests(keys))
    _events(peer)
    wire.receive_data(b"".join(peer.piece_header(*key) + _payload(key) for key in keys) + m.Have(1).encode())
    first = wire.next_event()
    assert isinstance(first, PieceRun) and [(i, b) for i, b, _ in first] == [(i, b) for i, b, _ in keys]
    assert all(isinstance(data, memoryview) for _, _, data in first)
    assert wire.next_event() == m.Have(1)


def test_a_bad_piece_inside_a_run_ends_the_connection() -> None:
    wire, peer = _pair(runs=True)
    good, bad = ALL_BLOCKS[0], ALL_BLOCKS[1]
    peer.receive_data(wire.send_requests([good]))
    _events(peer)
    wire.receive_data(peer.piece_header(*good) + _payload(good) + m.Piece(bad[0], bad[1], _payload(bad)).encode())
    with pytest.raises(ProtocolError, match="unrequested block"):
        wire.next_event()
    with pytest.raises(ProtocolError):
        wire.next_event()


@settings(max_examples=60)
@given(blocks)
def test_request_runs_record_the_same_requests_as_single_events(chosen: list[tuple[int, int, int]]) -> None:
    single, single_peer = _pair()
    batched, batched_peer = _pair(runs=True)
    single_peer.receive_data(single.send_requests(chosen))
    batched_peer.receive_data(batched.send_requests(chosen))
    one_by_one = [(e.index, e.begin, e.length) for e in _events(single_peer)]  # type: ignore[attr-defined]
    in_runs = []  # a request while the first-message window is open comes out alone
    for event in _events(batched_peer):
        in_runs += event if isinstance(event, list) else [(event.index, event.begin, event.length)]  # type: ignore[attr-defined]
    assert in_runs == one_by_one == chosen
    assert list(batched_peer.requests_in) == list(single_peer.requests_in) == chosen


def test_request_runs_keep_the_queue_cap() -> None:
    wire, peer = _pair(runs=True)
    peer.limits = WireLimits(max_incoming_requests=3)
    peer.receive_data(wire.send_requests(ALL_BLOCKS[:4]))
    with pytest.raises(ProtocolError, match="more than 3 requests queued"):
        _events(peer)


def test_frame_pieces_matches_piece_header_and_refuses_what_it_cannot_send() -> None:
    wire, peer = _pair()
    keys = ALL_BLOCKS[:3]
    peer.receive_data(wire.send_requests(keys))
    _events(peer)
    datas = [_payload(key) for key in keys]
    for bad_keys, bad_datas in (
        ([ALL_BLOCKS[4]], [_payload(ALL_BLOCKS[4])]),  # never requested
        ([keys[0]], [b"short"]),  # wrong length
        ([keys[0], keys[0]], [datas[0], datas[0]]),  # the same block twice
        (keys, datas[:2]),  # a datum missing
    ):
        with pytest.raises(LocalError):
            peer.frame_pieces(bad_keys, bad_datas)
        assert list(peer.requests_in) == keys, "a refused batch records nothing"
    chunks = peer.frame_pieces(keys, datas)
    assert b"".join(chunks) == b"".join(m.Piece(*key[:2], data).encode() for key, data in zip(keys, datas))
    assert not peer.requests_in
    wire.receive_data(b"".join(chunks))
    assert [e.data for e in _events(wire)] == datas  # type: ignore[attr-defined]


def test_a_refused_request_batch_records_nothing() -> None:
    wire, _ = _pair()
    with pytest.raises(LocalError, match="outside the torrent"):
        wire.send_requests([ALL_BLOCKS[0], ALL_BLOCKS[1], (LAYOUT.num_pieces, 0, 16384)])
    assert not wire.requests_out


def test_a_forgotten_request_no_longer_counts_against_the_queue_cap() -> None:
    wire = PeerWire(peer_id=b"A" * 20, info_hash=META.info_hash, layout=LAYOUT, fast=False, limits=WireLimits(max_incoming_requests=2))
    peer = PeerWire(peer_id=b"B" * 20, info_hash=META.info_hash, layout=LAYOUT, fast=False)
    peer.receive_data(wire.handshake())
    wire.receive_data(peer.handshake())
    assert isinstance(wire.next_event(), m.Handshake) and isinstance(peer.next_event(), m.Handshake)
    peer.receive_data(wire.send(m.Unchoke()))
    _events(peer)
    for key in ALL_BLOCKS[:4]:  # four requests, one at a time, each refused: never more than one owed
        wire.receive_data(peer.send_requests([key]))
        _events(wire)
        assert list(wire.requests_in) == [key]
        wire.forget_request(key)
    assert not wire.requests_in


# -- the hooks for scatter reads (engine/direct.py) ------------------------------------------


def _requested(keys: list[tuple[int, int, int]]) -> PeerWire:
    wire, _ = _pair(runs=True)
    wire.send_requests(keys)
    return wire


def test_expected_header_is_what_the_peer_frames() -> None:
    seed, _ = _pair()
    wire = _requested([(1, 16384, 16384)])
    seed.requests_in[(1, 16384, 16384)] = None
    framed = seed.send(m.Piece(1, 16384, bytes(16384)))
    assert wire.expected_header((1, 16384, 16384)) == framed[:13]


def test_place_settles_a_request_once() -> None:
    wire = _requested([(0, 0, 16384), (0, 16384, 16384)])
    assert wire.placing
    wire.place((0, 0, 16384))
    assert list(wire.requests_out) == [(0, 16384, 16384)]
    with pytest.raises(LocalError, match="not requested"):
        wire.place((0, 0, 16384))


@given(st.integers(min_value=0, max_value=16384 + 12))
def test_partial_piece_describes_only_a_started_block_of_ours(cut: int) -> None:
    """Whatever prefix of a piece message is buffered, ``partial_piece`` names the block only
    once its header is whole and the message is not, and hands over exactly the payload so far."""
    key = (2, 0, LAYOUT.block_size(2, 0))
    wire = _requested([key])
    payload = bytes(range(256)) * (key[2] // 256) + bytes(key[2] % 256)
    message = wire.expected_header(key) + payload
    wire.receive_data(message[:cut])
    assert wire.next_event() is NEED_DATA
    assert wire.placing is (cut == 0)
    partial = wire.partial_piece()
    if cut < 13:
        assert partial is None
        return
    assert partial is not None and partial[0] == key and bytes(partial[1]) == payload[: cut - 13]
    wire.take_partial(key)
    assert wire.placing and not wire.requests_out


def test_partial_piece_ignores_blocks_we_did_not_ask_this_peer_for() -> None:
    wire = _requested([(0, 0, 16384)])
    wire.receive_data(wire.expected_header((0, 16384, 16384)) + bytes(100))
    assert wire.partial_piece() is None
    other = _requested([(0, 0, 16384)])
    other.receive_data(m.Have(1).encode()[:3])
    assert other.partial_piece() is None and not other.placing


# A layout with whole runs to frame: 16 blocks per piece and a short last piece.
_, WIDE_META = make_torrent({"w.bin": bytes(4 * 256 * 1024 + 5000)}, single=True, name="w.bin", piece_length=256 * 1024)
WIDE = Layout(WIDE_META.info)


def _wide_pair() -> tuple[PeerWire, PeerWire]:
    return _pair(WIDE_META, WIDE)


@st.composite
def _block_runs(draw: st.DrawFn) -> list[tuple[int, int, int]]:
    """Runs of consecutive blocks (what a refill asks and a scatter read expects), now and then
    with a gap, a repeat, a short length or a block past the end: whole runs and near misses."""
    keys: list[tuple[int, int, int]] = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        index = draw(st.integers(min_value=0, max_value=WIDE.num_pieces - 1))
        count = WIDE.blocks_in_piece(index)
        first = draw(st.integers(min_value=0, max_value=count - 1))
        last = draw(st.integers(min_value=first + 1, max_value=count))
        keys += [(index, n * 16384, WIDE.block_size(index, n)) for n in range(first, last)]
    if keys and draw(st.booleans()):
        position = draw(st.integers(min_value=0, max_value=len(keys) - 1))
        index, begin, length = keys[position]
        keys[position] = draw(st.sampled_from([(index, begin + 16384, length), (index, begin + 16384, 16384), (index, begin, 100), (index, begin + 1, length), keys[0]]))
    return keys


@settings(max_examples=150)
@given(_block_runs())
def test_runs_framed_from_a_template_match_one_message_per_block(keys: list[tuple[int, int, int]]) -> None:
    """Requests and expected piece headers framed a run at a time are byte for byte what
    encoding each block gives, and a batch with a block outside its piece is still refused."""
    wire, _ = _wide_pair()
    headers = b"".join(struct.pack(">IBII", 9 + length, 7, index, begin) for index, begin, length in keys)
    assert wire.expected_headers(keys) == headers
    valid = all(0 < length <= 16384 and begin + length <= WIDE.piece_size(index) and begin >= 0 for index, begin, length in keys)
    if not valid:
        with pytest.raises(LocalError):
            wire.send_requests(keys)
        assert not wire.requests_out
        return
    one, _ = _wide_pair()
    assert wire.send_requests(keys) == b"".join(one.send(m.Request(*key)) for key in keys)
    assert list(wire.requests_out) == list(one.requests_out)


def test_whole_blocks_past_the_short_last_piece_are_refused() -> None:
    """The last piece is 5 000 bytes: a whole 16 KiB block there is past its end, even inside
    a run that frames from the template up to that point."""
    last = WIDE.num_pieces - 1
    for bad in ([(last, 0, 16384)], [(last, 16384, 16384)], [(last - 1, 15 * 16384, 16384), (last, 0, 16384)]):
        wire, _ = _wide_pair()
        with pytest.raises(LocalError, match="past the end"):
            wire.send_requests(bad)
        assert not wire.requests_out
