"""Peer wire messages (BEP 3, BEP 6 fast extension, BEP 10 extension protocol) as values.

Each message is a frozen dataclass with an ``encode()`` that returns its exact bytes on the
wire, length prefix included. Decoding lives in ``codec`` because only there is the context
(piece count, piece sizes, negotiated extensions) that says whether a message is legal.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Union

from p2pdist import bencode
from p2pdist.bitfield import Bitfield

PROTOCOL = b"BitTorrent protocol"
HANDSHAKE_LEN = 1 + len(PROTOCOL) + 8 + 20 + 20

# Reserved bits (BEP 4 assignments): byte 5 bit 0x10 = extension protocol, byte 7 bit 0x04 = fast.
EXTENSION_BIT = (5, 0x10)
FAST_BIT = (7, 0x04)


def make_reserved(*, extensions: bool = True, fast: bool = True) -> bytes:
    reserved = bytearray(8)
    if extensions:
        reserved[EXTENSION_BIT[0]] |= EXTENSION_BIT[1]
    if fast:
        reserved[FAST_BIT[0]] |= FAST_BIT[1]
    return bytes(reserved)


class MessageId(enum.IntEnum):
    CHOKE = 0
    UNCHOKE = 1
    INTERESTED = 2
    NOT_INTERESTED = 3
    HAVE = 4
    BITFIELD = 5
    REQUEST = 6
    PIECE = 7
    CANCEL = 8
    PORT = 9
    SUGGEST = 0x0D
    HAVE_ALL = 0x0E
    HAVE_NONE = 0x0F
    REJECT = 0x10
    ALLOWED_FAST = 0x11
    EXTENDED = 20


_HEADER = struct.Struct(">IB")
_INDEX = struct.Struct(">IBI")
_BLOCK = struct.Struct(">IBIII")
_PIECE_HEADER = struct.Struct(">IBII")


@dataclass(frozen=True, slots=True)
class Handshake:
    info_hash: bytes
    peer_id: bytes
    reserved: bytes = field(default_factory=make_reserved)

    @property
    def supports_extensions(self) -> bool:
        return bool(self.reserved[EXTENSION_BIT[0]] & EXTENSION_BIT[1])

    @property
    def supports_fast(self) -> bool:
        return bool(self.reserved[FAST_BIT[0]] & FAST_BIT[1])

    def encode(self) -> bytes:
        return bytes([len(PROTOCOL)]) + PROTOCOL + self.reserved + self.info_hash + self.peer_id


@dataclass(frozen=True, slots=True)
class KeepAlive:
    def encode(self) -> bytes:
        return b"\x00\x00\x00\x00"


@dataclass(frozen=True, slots=True)
class _Bare:
    ID: ClassVar[MessageId]

    def encode(self) -> bytes:
        return _HEADER.pack(1, self.ID)


@dataclass(frozen=True, slots=True)
class Choke(_Bare):
    ID: ClassVar[MessageId] = MessageId.CHOKE


@dataclass(frozen=True, slots=True)
class Unchoke(_Bare):
    ID: ClassVar[MessageId] = MessageId.UNCHOKE


@dataclass(frozen=True, slots=True)
class Interested(_Bare):
    ID: ClassVar[MessageId] = MessageId.INTERESTED


@dataclass(frozen=True, slots=True)
class NotInterested(_Bare):
    ID: ClassVar[MessageId] = MessageId.NOT_INTERESTED


@dataclass(frozen=True, slots=True)
class HaveAll(_Bare):
    ID: ClassVar[MessageId] = MessageId.HAVE_ALL


@dataclass(frozen=True, slots=True)
class HaveNone(_Bare):
    ID: ClassVar[MessageId] = MessageId.HAVE_NONE


@dataclass(frozen=True, slots=True)
class _Indexed:
    ID: ClassVar[MessageId]
    index: int

    def encode(self) -> bytes:
        return _INDEX.pack(5, self.ID, self.index)


@dataclass(frozen=True, slots=True)
class Have(_Indexed):
    ID: ClassVar[MessageId] = MessageId.HAVE


@dataclass(frozen=True, slots=True)
class Suggest(_Indexed):
    ID: ClassVar[MessageId] = MessageId.SUGGEST


@dataclass(frozen=True, slots=True)
class AllowedFast(_Indexed):
    ID: ClassVar[MessageId] = MessageId.ALLOWED_FAST


@dataclass(frozen=True, slots=True)
class _BlockRef:
    ID: ClassVar[MessageId]
    index: int
    begin: int
    length: int

    def encode(self) -> bytes:
        return _BLOCK.pack(13, self.ID, self.index, self.begin, self.length)


@dataclass(frozen=True, slots=True)
class Request(_BlockRef):
    ID: ClassVar[MessageId] = MessageId.REQUEST


@dataclass(frozen=True, slots=True)
class Cancel(_BlockRef):
    ID: ClassVar[MessageId] = MessageId.CANCEL


@dataclass(frozen=True, slots=True)
class Reject(_BlockRef):
    ID: ClassVar[MessageId] = MessageId.REJECT


@dataclass(frozen=True, slots=True)
class BitfieldMessage:
    bitfield: Bitfield

    def encode(self) -> bytes:
        payload = self.bitfield.to_bytes()
        return _HEADER.pack(1 + len(payload), MessageId.BITFIELD) + payload


@dataclass(frozen=True, slots=True)
class Piece:
    index: int
    begin: int
    data: bytes

    def header(self) -> bytes:
        """The 13 bytes before the data, so a sender can write header and data without joining."""
        return _PIECE_HEADER.pack(9 + len(self.data), MessageId.PIECE, self.index, self.begin)

    def encode(self) -> bytes:
        return self.header() + bytes(self.data)


@dataclass(frozen=True, slots=True)
class Port:
    port: int

    def encode(self) -> bytes:
        return struct.pack(">IBH", 3, MessageId.PORT, self.port)


@dataclass(frozen=True, slots=True)
class Extended:
    """A BEP 10 message other than the handshake; we advertise none, so these are only counted."""

    ext_id: int
    payload: bytes

    def encode(self) -> bytes:
        return _HEADER.pack(2 + len(self.payload), MessageId.EXTENDED) + bytes([self.ext_id]) + self.payload


@dataclass(frozen=True, slots=True)
class ExtendedHandshake:
    """BEP 10 handshake (extended id 0). Private torrents advertise no extensions (no PEX/DHT)."""

    extensions: dict[str, int] = field(default_factory=dict)
    client: str | None = None
    listen_port: int | None = None
    reqq: int | None = None
    extra: Mapping[bytes, object] = field(default_factory=dict, compare=False)

    def encode(self) -> bytes:
        body: dict[bytes, object] = {b"m": {k.encode(): v for k, v in self.extensions.items()}}
        if self.client is not None:
            body[b"v"] = self.client.encode()
        if self.listen_port is not None:
            body[b"p"] = self.listen_port
        if self.reqq is not None:
            body[b"reqq"] = self.reqq
        payload = bencode.encode(body)
        return _HEADER.pack(2 + len(payload), MessageId.EXTENDED) + b"\x00" + payload


# Every message after the handshakes: what ``PeerWire.send`` takes and ``next_event`` decodes
# (by ``MessageId``; the keep-alive has none).
Message = Union[
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have,
    BitfieldMessage,
    Request,
    Piece,
    Cancel,
    Port,
    Suggest,
    HaveAll,
    HaveNone,
    Reject,
    AllowedFast,
    Extended,
    ExtendedHandshake,
]
