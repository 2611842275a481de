"""Strict, bounded bencoding (BEP 3).

``decode`` accepts only the canonical form: no leading zeros, no ``-0``, sorted unique string
keys, nothing after the value. Limits on depth, tokens, string length and integer digits keep a
hostile input from costing more than its own size; only ``BencodeError`` (with the byte offset)
escapes. ``decode_spans`` also returns where each top-level value lies in the input, so the
info-hash is taken over the bytes received, never over a re-encoding.
"""

from p2pdist.bencode.codec import (
    DEFAULT_LIMITS,
    Limits,
    Raw,
    Value,
    decode,
    decode_spans,
    encode,
)

__all__ = ["DEFAULT_LIMITS", "Limits", "Raw", "Value", "decode", "decode_spans", "encode"]
