"""Bitfield against a plain Python set of indices as the model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pdist.bitfield import Bitfield
from p2pdist.errors import RemoteError


def model_bytes(length: int, members: set[int]) -> bytes:
    """The wire form straight from BEP 3: bit i is bit (7 - i % 8) of byte i // 8."""
    out = bytearray((length + 7) // 8)
    for index in members:
        out[index // 8] |= 1 << (7 - index % 8)
    return bytes(out)


def assert_matches(field: Bitfield, length: int, members: set[int]) -> None:
    assert len(field) == length
    assert field.count == len(members)
    assert list(field) == sorted(members)
    assert list(field.missing()) == sorted(set(range(length)) - members)
    assert field.all() == (len(members) == length)
    assert field.any() == bool(members)
    assert field.to_bytes() == model_bytes(length, members)
    assert all(field[i] == (i in members) for i in range(length))


operations = st.lists(st.tuples(st.sampled_from(["set", "clear"]), st.integers(0, 10**6)), max_size=60)


@settings(max_examples=120, deadline=None)
@given(st.integers(0, 200), operations)
def test_set_and_clear_follow_a_set_model(length: int, ops: list[tuple[str, int]]) -> None:
    field = Bitfield(length)
    members: set[int] = set()
    for op, raw in ops:
        if length == 0:
            with pytest.raises(IndexError):
                field.set(raw)
            continue
        index = raw % length
        if op == "set":
            assert field.set(index) == (index not in members)
            members.add(index)
        else:
            assert field.clear(index) == (index in members)
            members.discard(index)
    assert_matches(field, length, members)
    again = Bitfield.from_bytes(field.to_bytes(), length)
    assert again == field
    assert_matches(again, length, members)
    assert Bitfield(length, members) == field


@settings(max_examples=120, deadline=None)
@given(st.integers(0, 200), st.data())
def test_from_bytes_to_bytes_round_trip(length: int, data: st.DataObject) -> None:
    members = data.draw(st.sets(st.integers(0, length - 1)) if length else st.just(set()))
    wire = model_bytes(length, members)
    field = Bitfield.from_bytes(wire, length)
    assert_matches(field, length, members)
    assert field.to_bytes() == wire
    assert Bitfield.from_bytes(bytearray(wire), length) == field
    assert Bitfield.from_bytes(memoryview(b"#" + wire)[1:], length) == field


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 200), st.data())
def test_any_set_spare_bit_is_rejected(length: int, data: st.DataObject) -> None:
    spare = (8 - length % 8) % 8
    wire = bytearray(model_bytes(length, set(range(length))))
    if spare == 0:
        assert Bitfield.from_bytes(bytes(wire), length).all()
        return
    bit = data.draw(st.integers(0, spare - 1))
    wire[-1] |= 1 << bit
    with pytest.raises(RemoteError, match="spare bits"):
        Bitfield.from_bytes(bytes(wire), length)


@pytest.mark.parametrize(("length", "size"), [(0, 1), (1, 0), (8, 2), (9, 1), (16, 3)])
def test_wrong_size_is_rejected(length: int, size: int) -> None:
    with pytest.raises(RemoteError, match=f"has {size} bytes, expected {(length + 7) // 8}"):
        Bitfield.from_bytes(bytes(size), length)


def test_wire_bit_order() -> None:
    assert Bitfield(10, [0, 9]).to_bytes() == b"\x80\x40"
    assert Bitfield(8, [7]).to_bytes() == b"\x01"
    assert list(Bitfield.from_bytes(b"\x41\x80", 9)) == [1, 7, 8]


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 15, 16, 17, 100])
def test_full(length: int) -> None:
    field = Bitfield.full(length)
    assert_matches(field, length, set(range(length)))
    assert field == Bitfield(length, range(length))
    assert Bitfield.from_bytes(field.to_bytes(), length) == field


def test_copy_is_independent() -> None:
    field = Bitfield(20, [1, 2])
    clone = field.copy()
    clone.set(3)
    field.clear(1)
    assert list(field) == [2] and list(clone) == [1, 2, 3]
    assert clone.count == 3 and field.count == 1


def test_equality_needs_same_length() -> None:
    assert Bitfield(8, [0]) != Bitfield(9, [0])
    assert Bitfield(8, [0]) != b"\x80"
    assert Bitfield(8, [0]) == Bitfield.from_bytes(b"\x80", 8)


def test_bad_indices_and_lengths() -> None:
    field = Bitfield(10)
    for index in (-1, 10, 11):
        with pytest.raises(IndexError):
            field.set(index)
        with pytest.raises(IndexError):
            field.clear(index)
        with pytest.raises(IndexError):
            field[index]
    with pytest.raises(IndexError):
        Bitfield(3, [3])
    with pytest.raises(ValueError):
        Bitfield(-1)
    with pytest.raises(ValueError):
        Bitfield.from_bytes(b"", -1)
    assert field.count == 0 and list(field.missing()) == list(range(10))
