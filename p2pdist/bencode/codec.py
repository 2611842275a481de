"""The bencode decoder and encoder; see the package docstring for the rules."""

from __future__ import annotations

from p2pdist.errors import BencodeError
from p2pdist.records import Record

TYPE_CHECKING = False  # typing is not imported at run time (see p2pdist.records)
if TYPE_CHECKING:
    from typing import Union

    Value = Union[int, bytes, list["Value"], dict[bytes, "Value"]]
else:
    Value = object  # what a decoded value may be is the type checkers' business


class Limits(Record):
    """Caps for one decode. The defaults fit any sane torrent (100k files, 1M pieces)."""

    max_depth: int = 64  # torrents nest 4 deep; far below Python's recursion limit
    max_tokens: int = 2_000_000  # about 6 tokens per file entry in a 100k-file torrent
    max_string: int = 64 * 1024 * 1024  # `pieces` of a 1M-piece torrent is 20 MB
    max_int_digits: int = 32  # int64 needs 19; leaves room, rejects megabyte integers


DEFAULT_LIMITS = Limits()


class Raw(Record):
    """Bytes that are already bencoded, emitted verbatim by ``encode``.

    Used to put a received info dictionary back into a torrent without re-encoding it, so the
    info-hash cannot change.
    """

    data: bytes

_DIGITS = frozenset(b"0123456789")


class _Decoder:
    __slots__ = ("data", "limits", "tokens")

    def __init__(self, data: bytes, limits: Limits) -> None:
        self.data = data
        self.limits = limits
        self.tokens = 0

    def fail(self, message: str, offset: int) -> BencodeError:
        return BencodeError(message, offset)

    def value(self, pos: int, depth: int) -> tuple[Value, int]:
        data = self.data
        if pos >= len(data):
            raise self.fail("truncated input: expected a value", pos)
        self.tokens += 1
        if self.tokens > self.limits.max_tokens:
            raise self.fail(f"more than {self.limits.max_tokens} values", pos)
        lead = data[pos]
        if lead == 0x69:  # i
            return self.integer(pos)
        if 0x30 <= lead <= 0x39:
            return self.string(pos)
        if lead == 0x6C or lead == 0x64:  # l, d
            if depth >= self.limits.max_depth:
                raise self.fail(f"nesting deeper than {self.limits.max_depth}", pos)
            try:
                if lead == 0x6C:
                    return self.list_value(pos, depth + 1)
                return self.dict_value(pos, depth + 1)
            except RecursionError:
                # Only reachable with a max_depth raised past what the interpreter's stack holds.
                raise self.fail("nesting too deep for the interpreter's stack", pos) from None
        raise self.fail(f"unexpected byte {bytes([lead])!r}", pos)

    def integer(self, pos: int) -> tuple[int, int]:
        data = self.data
        start = pos + 1
        limit = start + self.limits.max_int_digits + 1
        end = data.find(b"e", start, limit + 1)
        # Without an 'e' in reach, look one byte past it: enough to tell "too long" from "cut off".
        body = data[start:end] if end >= 0 else data[start : limit + 1]
        digits = body[1:] if body[:1] == b"-" else body
        if not _DIGITS.issuperset(digits):
            raise self.fail("malformed integer", start)
        if len(digits) > self.limits.max_int_digits:
            raise self.fail(f"integer longer than {self.limits.max_int_digits} digits", start)
        if end < 0:
            raise self.fail("truncated integer", len(data))
        if not digits:
            raise self.fail("malformed integer", start)
        if digits[0] == 0x30 and (len(digits) > 1 or body[:1] == b"-"):
            raise self.fail("integer with leading zero or negative zero", start)
        return int(body), end + 1

    def string(self, pos: int) -> tuple[bytes, int]:
        data = self.data
        colon = data.find(b":", pos, pos + 21)
        if colon < 0:
            if len(data) < pos + 21 and _DIGITS.issuperset(data[pos:]):
                raise self.fail("truncated string length", len(data))
            raise self.fail("malformed string length", pos)
        digits = data[pos:colon]
        if not _DIGITS.issuperset(digits):
            raise self.fail("malformed string length", pos)
        if digits[0] == 0x30 and len(digits) > 1:
            raise self.fail("string length with leading zero", pos)
        length = int(digits)
        if length > self.limits.max_string:
            raise self.fail(f"string of {length} bytes exceeds {self.limits.max_string}", pos)
        start = colon + 1
        end = start + length
        if end > len(data):
            raise self.fail(f"truncated string: {length} bytes announced", pos)
        return data[start:end], end

    def list_value(self, pos: int, depth: int) -> tuple[list[Value], int]:
        data = self.data
        items: list[Value] = []
        pos += 1
        while True:
            if pos >= len(data):
                raise self.fail("truncated list", pos)
            if data[pos] == 0x65:
                return items, pos + 1
            item, pos = self.value(pos, depth)
            items.append(item)

    def dict_value(self, pos: int, depth: int) -> tuple[dict[bytes, Value], int]:
        result, end, _ = self.dict_spans(pos, depth)
        return result, end

    def dict_spans(self, pos: int, depth: int) -> tuple[dict[bytes, Value], int, dict[bytes, tuple[int, int]]]:
        data = self.data
        result: dict[bytes, Value] = {}
        spans: dict[bytes, tuple[int, int]] = {}
        previous: bytes | None = None
        pos += 1
        while True:
            if pos >= len(data):
                raise self.fail("truncated dictionary", pos)
            lead = data[pos]
            if lead == 0x65:
                return result, pos + 1, spans
            if not 0x30 <= lead <= 0x39:
                raise self.fail("dictionary key is not a string", pos)
            key_at = pos
            self.tokens += 1
            key, pos = self.string(pos)
            if previous is not None and key <= previous:
                what = "duplicate" if key == previous else "unsorted"
                raise self.fail(f"{what} dictionary key {key[:40]!r}", key_at)
            previous = key
            start = pos
            result[key], pos = self.value(pos, depth)
            spans[key] = (start, pos)


def _finish(decoder: _Decoder, end: int) -> None:
    if end != len(decoder.data):
        raise decoder.fail("trailing data after the value", end)


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Value:
    """Decode exactly one canonical value that fills ``data``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("bencode input must be bytes")
    decoder = _Decoder(bytes(data), limits)
    value, end = decoder.value(0, 0)
    _finish(decoder, end)
    return value


def decode_spans(data: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[dict[bytes, Value], dict[bytes, tuple[int, int]]]:
    """Decode a top-level dictionary and return ``(dict, {key: (start, end)})``.

    ``data[start:end]`` are the exact bytes of each value as received (for the info-hash).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("bencode input must be bytes")
    decoder = _Decoder(bytes(data), limits)
    if not data:
        raise decoder.fail("truncated input: expected a value", 0)
    if data[0] != 0x64:
        raise decoder.fail("top-level value is not a dictionary", 0)
    decoder.tokens = 1
    result, end, spans = decoder.dict_spans(0, 1)
    _finish(decoder, end)
    return result, spans


def encode(value: object) -> bytes:
    """Canonical encoding: dictionary keys sorted by their raw bytes; str encoded as UTF-8."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _key_bytes(key: object) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    raise TypeError(f"dictionary key must be bytes or str, not {type(key).__name__}")


def _encode(value: object, out: list[bytes]) -> None:
    if isinstance(value, Raw):
        out.append(value.data)
    elif isinstance(value, bool):
        raise TypeError("bencode has no booleans; use 0 or 1")
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, str):
        _encode(value.encode(), out)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        items = sorted(((_key_bytes(k), v) for k, v in value.items()), key=lambda item: item[0])
        for (a, _), (b, _) in zip(items, items[1:]):
            if a == b:
                raise TypeError(f"duplicate dictionary key {a!r}")
        out.append(b"d")
        for key, item in items:
            out.append(b"%d:" % len(key))
            out.append(key)
            _encode(item, out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")
