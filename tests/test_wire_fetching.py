"""The p2pdist_fetching claim payload: exact round trip, and bad payloads end only that peer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pdist.errors import ProtocolError
from p2pdist.wire import fetching


@given(st.integers(min_value=1, max_value=1 << 20).flatmap(lambda n: st.tuples(st.just(n), st.integers(min_value=0, max_value=n - 1))))
def test_claims_round_trip(case: tuple[int, int]) -> None:
    num_pieces, index = case
    payload = fetching.encode_payload(index)
    assert len(payload) == 4
    assert fetching.decode_payload(payload, num_pieces) == index


@given(st.binary(max_size=12).filter(lambda b: len(b) != 4))
def test_claims_of_the_wrong_size_are_protocol_errors(payload: bytes) -> None:
    with pytest.raises(ProtocolError, match="expected 4"):
        fetching.decode_payload(payload, 100)


def test_claims_past_the_last_piece_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError, match="piece 100, torrent has 100"):
        fetching.decode_payload(fetching.encode_payload(100), 100)
