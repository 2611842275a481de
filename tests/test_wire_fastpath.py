"""The codec's fast paths give the same bytes and state as the one-message-at-a-time API."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pdist.errors import LocalError
from p2pdist.metainfo import Layout
from p2pdist.wire import messages as m
from p2pdist.wire.codec import NEED_DATA, PeerWire
from tests.support.torrents import make_torrent

_, META = make_torrent({"a.bin": bytes(100_000)}, single=True, name="a.bin", piece_length=32 * 1024)
LAYOUT = Layout(META.info)


def _pair(**options: object) -> tuple[PeerWire, PeerWire]:
    a = PeerWire(peer_id=b"A" * 20, info_hash=META.info_hash, layout=LAYOUT, **options)  # type: ignore[arg-type]
    b = PeerWire(peer_id=b"B" * 20, info_hash=META.info_hash, layout=LAYOUT, **options)  # type: ignore[arg-type]
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


def test_borrowed_piece_data_is_a_view_with_the_same_bytes() -> None:
    copy_wire, copy_peer = _pair()
    view_wire, view_peer = _pair(borrow_piece_data=True)
    payload = bytes(range(256)) * 64
    for wire, peer in ((copy_wire, copy_peer), (view_wire, view_peer)):
        peer.receive_data(wire.send_requests([(1, 0, 16384)]))
        assert isinstance(peer.next_event(), m.Request)
        wire.receive_data(peer.piece_header(1, 0, 16384) + payload)
    copied, viewed = copy_wire.next_event(), view_wire.next_event()
    assert isinstance(copied.data, bytes) and isinstance(viewed.data, memoryview)
    assert bytes(viewed.data) == copied.data == payload
