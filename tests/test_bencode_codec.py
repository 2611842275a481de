"""The strict bencode codec: exact rejections with offsets, limits, and bencode.py as an oracle.

Every decoder property is checked three ways (as h11's test_io does): the whole input through
``decode``, the same input through ``decode_spans``, and the input with trailing bytes, which
must fail with the offset of the first trailing byte.
"""

from __future__ import annotations

import bencodepy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pdist.bencode import DEFAULT_LIMITS, Limits, Raw, decode, decode_spans, encode
from p2pdist.errors import BencodeError, RemoteError

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------
# strategies

ints = st.integers(min_value=-(10**31) + 1, max_value=10**31 - 1)
strings = st.binary(max_size=40)
values = st.recursive(
    ints | strings,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(strings, children, max_size=5),
    max_leaves=25,
)
dicts = st.dictionaries(strings, values, max_size=6)


def decode_error(data: bytes, limits: Limits = DEFAULT_LIMITS) -> BencodeError:
    with pytest.raises(BencodeError) as caught:
        decode(data, limits)
    return caught.value


# ---------------------------------------------------------------------------------------------
# examples


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"i0e", 0),
        (b"i42e", 42),
        (b"i-42e", -42),
        (b"i9223372036854775808e", 2**63),
        (b"0:", b""),
        (b"4:spam", b"spam"),
        (b"3:\x00\xff:", b"\x00\xff:"),
        (b"le", []),
        (b"li1e1:ae", [1, b"a"]),
        (b"de", {}),
        (b"d1:ai1e1:bli2eee", {b"a": 1, b"b": [2]}),
        (b"d0:i0e1:ai1ee", {b"": 0, b"a": 1}),
        (b"d2:a\x001:x2:a\x011:ye", {b"a\x00": b"x", b"a\x01": b"y"}),
        (b"llleee", [[[]]]),
    ],
)
def test_decodes_canonical_examples(data: bytes, value: object) -> None:
    assert decode(data) == value
    assert encode(value) == data
    assert bencodepy.decode(data) == value


@pytest.mark.parametrize(
    ("data", "reason", "offset"),
    [
        (b"", "truncated input", 0),
        (b"x", "unexpected byte", 0),
        (b"-1:a", "unexpected byte", 0),
        (b" i1e", "unexpected byte", 0),
        (b"i01e", "leading zero", 1),
        (b"i-0e", "negative zero", 1),
        (b"i-01e", "leading zero", 1),
        (b"i00e", "leading zero", 1),
        (b"ie", "malformed integer", 1),
        (b"i-e", "malformed integer", 1),
        (b"i--1e", "malformed integer", 1),
        (b"i+1e", "malformed integer", 1),
        (b"i 1e", "malformed integer", 1),
        (b"i1 e", "malformed integer", 1),
        (b"i1_0e", "malformed integer", 1),
        (b"i1.5e", "malformed integer", 1),
        (b"i1-e", "malformed integer", 1),
        (b"i1x", "malformed integer", 1),
        (b"i", "truncated integer", 1),
        (b"i12", "truncated integer", 3),
        (b"i-", "truncated integer", 2),
        (b"01:a", "string length with leading zero", 0),
        (b"00:", "string length with leading zero", 0),
        (b"1a:b", "malformed string length", 0),
        (b"1", "truncated string length", 1),
        (b"12", "truncated string length", 2),
        (b"5:abc", "truncated string: 5 bytes announced", 0),
        (b"1:", "truncated string: 1 bytes announced", 0),
        (b"99999999999999999999:x", "exceeds", 0),
        (b"123456789012345678901:x", "malformed string length", 0),
        (b"l", "truncated list", 1),
        (b"li1e", "truncated list", 4),
        (b"d", "truncated dictionary", 1),
        (b"d1:a", "truncated input: expected a value", 4),
        (b"d1:ai1e", "truncated dictionary", 7),
        (b"di1ei2ee", "dictionary key is not a string", 1),
        (b"dlei1ee", "dictionary key is not a string", 1),
        (b"d1:ai1e1:ai2ee", "duplicate dictionary key b'a'", 7),
        (b"d1:bi1e1:ai2ee", "unsorted dictionary key b'a'", 7),
        (b"d2:abi1e1:ai2ee", "unsorted dictionary key", 8),
        (b"d1:a01:be", "string length with leading zero", 4),
        (b"i1ei2e", "trailing data", 3),
        (b"0:0:", "trailing data", 2),
        (b"lee", "trailing data", 2),
        (b"dee", "trailing data", 2),
        (b"4:spam\n", "trailing data", 6),
    ],
)
def test_rejects_with_reason_and_offset(data: bytes, reason: str, offset: int) -> None:
    error = decode_error(data)
    assert reason in str(error)
    assert error.offset == offset
    assert str(error).endswith(f"at byte {offset}")
    assert isinstance(error, RemoteError) and error.exit_code == 5


def test_rejects_non_bytes_input_as_a_programming_error() -> None:
    with pytest.raises(TypeError):
        decode("i1e")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        decode_spans("de")  # type: ignore[arg-type]


def test_accepts_bytearray_and_memoryview() -> None:
    assert decode(bytearray(b"li1ee")) == [1]
    assert decode(memoryview(b"xli1eex")[1:-1]) == [1]
    assert decode_spans(memoryview(b"d1:ai1ee")) == ({b"a": 1}, {b"a": (4, 7)})


# ---------------------------------------------------------------------------------------------
# limits


def test_depth_limit_is_exact() -> None:
    depth = DEFAULT_LIMITS.max_depth
    assert decode(b"l" * depth + b"e" * depth) == decode(b"l" * depth + b"e" * depth)
    error = decode_error(b"l" * (depth + 1) + b"e" * (depth + 1))
    assert "nesting deeper than" in str(error) and error.offset == depth
    error = decode_error(b"d1:a" * (depth + 1), Limits(max_depth=depth))
    assert "nesting deeper than" in str(error) and error.offset == 4 * depth


def test_depth_limit_counts_dicts_and_lists_alike() -> None:
    limits = Limits(max_depth=3)
    assert decode(b"ld1:aleee", limits) == [{b"a": []}]
    assert "nesting deeper than 3" in str(decode_error(b"ld1:alleee", limits))


def test_huge_nesting_never_raises_recursion_error() -> None:
    # Default limits: refused at the cap, fast, whatever the input's length.
    error = decode_error(b"l" * 1_000_000)
    assert error.offset == DEFAULT_LIMITS.max_depth
    # A caller who raises the cap past the stack still gets a BencodeError, not RecursionError.
    for lead in (b"l", b"d1:a"):
        with pytest.raises(BencodeError) as caught:
            decode(lead * 100_000, Limits(max_depth=10**9))
        assert "nesting" in str(caught.value)
        assert 0 < caught.value.offset < len(lead) * 100_000


def test_token_limit() -> None:
    limits = Limits(max_tokens=4)
    assert decode(b"li1ei2ei3ee", limits) == [1, 2, 3]  # 4 values: the list and three items
    error = decode_error(b"li1ei2ei3ei4ee", limits)
    assert "more than 4 values" in str(error) and error.offset == 10
    # Keys count too: one dict, two keys, two values = 5 tokens.
    assert "more than 4 values" in str(decode_error(b"d1:ai1e1:bi2ee", limits))


def test_string_limit() -> None:
    limits = Limits(max_string=4)
    assert decode(b"4:abcd", limits) == b"abcd"
    error = decode_error(b"5:abcde", limits)
    assert "string of 5 bytes exceeds 4" in str(error) and error.offset == 0
    assert "exceeds" in str(decode_error(b"d5:abcdei1ee", limits))


def test_announced_length_never_allocates() -> None:
    # A string announcing 60 MiB in a 20-byte input: refused from the length, no allocation.
    error = decode_error(b"62914560:" + b"x" * 11)
    assert "truncated string: 62914560 bytes announced" in str(error)
    assert "exceeds" in str(decode_error(b"99999999999999999999:"))


@pytest.mark.parametrize("sign", [b"", b"-"])
def test_integer_digit_limit_is_exact(sign: bytes) -> None:
    digits = DEFAULT_LIMITS.max_int_digits
    assert decode(b"i" + sign + b"9" * digits + b"e") == int(sign + b"9" * digits)
    error = decode_error(b"i" + sign + b"9" * (digits + 1) + b"e")
    assert f"integer longer than {digits} digits" in str(error) and error.offset == 1
    # Also without an 'e' in sight: a megabyte of digits is refused at once.
    assert "integer longer than" in str(decode_error(b"i" + sign + b"9" * 1_000_000))
    limits = Limits(max_int_digits=3)
    assert decode(b"i" + sign + b"999e", limits) == int(sign + b"999")
    assert "longer than 3" in str(decode_error(b"i" + sign + b"1000e", limits))


# ---------------------------------------------------------------------------------------------
# decode_spans


def test_decode_spans_gives_exact_raw_bytes() -> None:
    data = b"d8:announce3:url4:infod6:lengthi5e4:name1:xee"
    value, spans = decode_spans(data)
    assert value == decode(data)
    assert set(spans) == {b"announce", b"info"}
    start, end = spans[b"info"]
    assert data[start:end] == b"d6:lengthi5e4:name1:xe"
    assert data[slice(*spans[b"announce"])] == b"3:url"


@pytest.mark.parametrize(
    ("data", "reason", "offset"),
    [
        (b"", "truncated input", 0),
        (b"le", "top-level value is not a dictionary", 0),
        (b"i1e", "top-level value is not a dictionary", 0),
        (b"d", "truncated dictionary", 1),
        (b"dei1e", "trailing data", 2),
        (b"d1:b0:1:a0:e", "unsorted dictionary key", 6),
    ],
)
def test_decode_spans_rejects(data: bytes, reason: str, offset: int) -> None:
    with pytest.raises(BencodeError) as caught:
        decode_spans(data)
    assert reason in str(caught.value) and caught.value.offset == offset


def test_decode_spans_applies_limits() -> None:
    with pytest.raises(BencodeError, match="more than 2 values"):
        decode_spans(b"d1:ai1e1:bi2ee", Limits(max_tokens=2))
    with pytest.raises(BencodeError, match="nesting deeper than 2"):
        decode_spans(b"d1:alleee", Limits(max_depth=2))


# ---------------------------------------------------------------------------------------------
# encoder


def test_encoder_is_canonical() -> None:
    assert encode({"b": 1, b"a": 2, "Z": 3}) == b"d1:Zi3e1:ai2e1:bi1ee"
    assert encode({b"\xff": 0, b"\x00": 0, b"": 0}) == b"d0:i0e1:\x00i0e1:\xffi0ee"
    assert encode("é") == b"2:\xc3\xa9"
    assert encode((1, [b"x"])) == b"li1el1:xee"
    assert encode(bytearray(b"ab")) == b"2:ab"
    assert encode(-7) == b"i-7e"
    assert encode({b"info": Raw(b"d1:xi1ee")}) == b"d4:infod1:xi1eee"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "no booleans"),
        (1.5, "cannot bencode float"),
        (None, "cannot bencode NoneType"),
        ({1: 2}, "dictionary key must be bytes or str"),
        ({"a": 1, b"a": 2}, "duplicate dictionary key"),
        ([{1.0}], "cannot bencode set"),
    ],
)
def test_encoder_rejects(value: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        encode(value)


# ---------------------------------------------------------------------------------------------
# properties: round trip, three ways, and bencode.py as the differential oracle


@FAST
@given(values)
def test_round_trip(value: object) -> None:
    data = encode(value)
    assert decode(data) == value
    assert encode(decode(data)) == data


@FAST
@given(values)
def test_agrees_with_bencode_py_on_valid_input(value: object) -> None:
    data = encode(value)
    assert bencodepy.encode(value) == data
    assert bencodepy.decode(data) == decode(data)


@FAST
@given(values, st.binary(min_size=1, max_size=8))
def test_three_ways(value: object, trailing: bytes) -> None:
    data = encode(value)
    # 1. whole
    assert decode(data) == value
    # 2. through decode_spans: each span re-decodes to its value; non-dicts refused at 0
    if isinstance(value, dict):
        top, spans = decode_spans(data)
        assert top == value and list(spans) == sorted(value)
        position = 1  # just after the 'd'
        for key, (start, end) in spans.items():
            assert data[position:start] == encode(key)  # each key sits right before its value
            assert decode(data[start:end]) == value[key]
            position = end
        assert position == len(data) - 1
    else:
        with pytest.raises(BencodeError) as caught:
            decode_spans(data)
        assert caught.value.offset == 0
    # 3. with trailing bytes: refused at the first trailing byte, by both entry points
    with pytest.raises(BencodeError) as caught:
        decode(data + trailing)
    assert caught.value.offset == len(data) and "trailing data" in str(caught.value)
    if isinstance(value, dict):
        with pytest.raises(BencodeError) as caught:
            decode_spans(data + trailing)
        assert caught.value.offset == len(data) and "trailing data" in str(caught.value)


@FAST
@given(values, st.data())
def test_every_proper_prefix_is_refused(value: object, data: st.DataObject) -> None:
    encoded = encode(value)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(BencodeError) as caught:
        decode(encoded[:cut])
    assert 0 <= caught.value.offset <= cut


def _check_against_oracle(data: bytes) -> None:
    """Only BencodeError escapes; what we accept, bencode.py reads alike and is canonical."""
    try:
        ours = decode(data)
    except BencodeError as error:
        assert 0 <= error.offset <= len(data)
        try:
            theirs = bencodepy.decode(data)
        except Exception:
            return  # both refuse
        # bencode.py is laxer (unsorted or duplicate keys); anything it reads in canonical
        # form, we must read too.
        assert bencodepy.encode(theirs) != data, f"refused canonical input {data!r}: {error}"
        return
    assert encode(ours) == data
    assert bencodepy.decode(data) == ours


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_only_raise_bencode_error(data: bytes) -> None:
    _check_against_oracle(data)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ilde0123456789:-", max_size=40))
def test_bencode_shaped_noise_only_raises_bencode_error(text: str) -> None:
    _check_against_oracle(text.encode())


mutations = st.lists(
    st.tuples(st.sampled_from(["flip", "insert", "delete", "set"]), st.integers(0, 10**6), st.integers(0, 255)),
    min_size=1,
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(values, mutations)
def test_mutated_encodings_only_raise_bencode_error(value: object, edits: list[tuple[str, int, int]]) -> None:
    data = bytearray(encode(value))
    for kind, where, byte in edits:
        if kind == "insert":
            data.insert(where % (len(data) + 1), byte)
        elif data:
            index = where % len(data)
            if kind == "delete":
                del data[index]
            elif kind == "flip":
                data[index] ^= 1 << (byte % 8)
            else:
                data[index] = b"ilde0123456789:-"[byte % 16]
    _check_against_oracle(bytes(data))
