"""Peer wire byte vectors: what a remote peer sends, and what our codec must make of it.

Run ``python tests/vectors/wire/generate.py`` to rewrite ``*.bin`` and ``manifest.json`` here;
``tests/test_wire_codec.py`` regenerates them in memory and fails if the files drifted.

Each vector is a list of steps. A ``peer a:b`` step is a byte range of the ``.bin`` file, fed to
the codec under test; a ``we ...`` step is an action of ours, taken after every event of the bytes
before it was read (a tiny scenario language: ``request 0 0 16384``, ``choke``, ``bind`` ...).
``events`` lists what ``next_event`` must return, each as ``describe(event)``; ``error`` is a
substring of the ``ProtocolError`` that must end the vector (or null).

Expected events come from the message values a scenario is written with, never from running
the codec, and a few vectors spell their bytes out in hex so ``encode()`` is checked too.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

from p2pdist import bencode
from p2pdist.bitfield import Bitfield
from p2pdist.metainfo import Layout, encode_torrent, parse_metainfo
from p2pdist.wire import messages as m

HERE = Path(__file__).resolve().parent

# Four pieces of 32 KiB, the last one 5000 bytes: two blocks per full piece, one short last
# block, and a bitfield byte with four spare bits.
PIECE_LENGTH = 32 * 1024
TOTAL_LENGTH = 3 * PIECE_LENGTH + 5000
RAW_INFO = bencode.encode(
    {
        b"length": TOTAL_LENGTH,
        b"name": b"vector.bin",
        b"piece length": PIECE_LENGTH,
        b"pieces": b"".join(hashlib.sha1(bytes([i])).digest() for i in range(4)),
    }
)
OUR_ID = b"-PD0100-ourselves..."
PEER_ID = b"-LT2100-remotepeer.."
BOTH = m.make_reserved()
PLAIN = m.make_reserved(extensions=False, fast=False)
FAST_ONLY = m.make_reserved(extensions=False, fast=True)
EXT_ONLY = m.make_reserved(extensions=True, fast=False)
# With extension payloads capped at 1000 bytes, the largest legal frame is a 16 KiB piece.
SMALL_EXT = {"max_extension_payload": 1000}
PIECE_FRAME = 9 + 16 * 1024


def torrent() -> tuple[Layout, bytes]:
    meta = parse_metainfo(encode_torrent(RAW_INFO))
    return Layout(meta.info), meta.info_hash


INFO_HASH = torrent()[1]


def block(index: int, begin: int, length: int) -> bytes:
    """Deterministic block contents, so a piece's digest says which block it was."""
    seed = struct.pack(">III", index, begin, length)
    return (hashlib.sha256(seed).digest() * (length // 32 + 1))[:length]


def describe(event: object) -> str:
    """One comparable line per event (pieces by length and digest, not by their bytes)."""
    name = type(event).__name__
    if isinstance(event, m.Handshake):
        return f"handshake reserved={event.reserved.hex()} peer={event.peer_id.hex()} hash={event.info_hash.hex()}"
    if isinstance(event, m.BitfieldMessage):
        return f"bitfield {len(event.bitfield)} {event.bitfield.to_bytes().hex()}"
    if isinstance(event, m.Piece):
        digest = hashlib.sha1(event.data).hexdigest()[:12]
        return f"piece {event.index} {event.begin} len={len(event.data)} sha1={digest}"
    if isinstance(event, (m.Request, m.Cancel, m.Reject)):
        return f"{name.lower()} {event.index} {event.begin} {event.length}"
    if isinstance(event, (m.Have, m.Suggest, m.AllowedFast)):
        return f"{name.lower()} {event.index}"
    if isinstance(event, m.Port):
        return f"port {event.port}"
    if isinstance(event, m.Extended):
        return f"extended {event.ext_id} {event.payload.hex()}"
    if isinstance(event, m.ExtendedHandshake):
        table = ",".join(f"{k}={v}" for k, v in sorted(event.extensions.items()))
        return f"ext_handshake m={{{table}}} v={event.client} p={event.listen_port} reqq={event.reqq}"
    return name.lower()


# -- scenario building ------------------------------------------------------------------------


@dataclass
class Vector:
    name: str
    fast: bool = True  # our side's reserved bits
    extensions: bool = True
    inbound: bool = False  # codec starts without the info-hash and binds after the handshake
    limits: dict[str, int] = field(default_factory=dict)
    steps: list[tuple[str, object]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    error: str | None = None

    def peer(self, *messages: object) -> Vector:
        self.steps.append(("peer", b"".join(msg.encode() for msg in messages)))  # type: ignore[attr-defined]
        self.events.extend(describe(msg) for msg in messages)
        return self

    def raw(self, data: bytes, *expected: object) -> Vector:
        """Bytes written out by hand; ``expected`` are the messages they must decode to."""
        self.steps.append(("peer", data))
        self.events.extend(describe(msg) for msg in expected)
        return self

    def we(self, *actions: str) -> Vector:
        self.steps.extend(("we", action) for action in actions)
        return self

    def fails(self, data: bytes, error: str) -> Vector:
        self.steps.append(("peer", data))
        self.error = error
        return self


def hello(reserved: bytes = BOTH, peer_id: bytes = PEER_ID, info_hash: bytes = INFO_HASH) -> m.Handshake:
    return m.Handshake(info_hash=info_hash, peer_id=peer_id, reserved=reserved)


def frame(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", 1 + len(payload), kind) + payload


def piece(index: int, begin: int, length: int) -> m.Piece:
    return m.Piece(index, begin, block(index, begin, length))


def opened(name: str, reserved: bytes = BOTH, **options: object) -> Vector:
    """A vector whose peer has sent its handshake, before anything else."""
    return Vector(name, **options).peer(hello(reserved))  # type: ignore[arg-type]


def seeded(name: str, reserved: bytes = BOTH, **options: object) -> Vector:
    """Handshake, then the peer describes itself as a seed and unchokes us."""
    fast = m.Handshake(b"", b"", reserved).supports_fast and bool(options.get("fast", True))
    first: object = m.HaveAll() if fast else m.BitfieldMessage(Bitfield.full(4))
    return opened(name, reserved, **options).peer(first, m.Unchoke())


def valid_vectors() -> list[Vector]:
    ext_payload = bencode.encode({b"m": {b"ut_metadata": 3, b"ut_pex": 0}, b"p": 6881, b"reqq": 250, b"v": b"libtorrent/2.1", b"yourip": b"\x7f\x00\x00\x01"})
    literal_stream = (
        # handshake: pstrlen, pstr, reserved (extension + fast), info-hash, peer id
        bytes.fromhex("13") + b"BitTorrent protocol" + bytes.fromhex("0000000000100004") + INFO_HASH + PEER_ID
        + bytes.fromhex("00000002 05 a0".replace(" ", ""))  # bitfield: pieces 0 and 2
        + bytes.fromhex("00000000")  # keep-alive
        + bytes.fromhex("00000001 01".replace(" ", ""))  # unchoke
        + bytes.fromhex("00000001 00".replace(" ", ""))  # choke
        + bytes.fromhex("00000001 02".replace(" ", ""))  # interested
        + bytes.fromhex("00000001 03".replace(" ", ""))  # not interested
        + bytes.fromhex("00000005 04 00000003".replace(" ", ""))  # have 3
        + bytes.fromhex("0000000d 06 00000001 00004000 00004000".replace(" ", ""))  # request 1 16384 16384
        + bytes.fromhex("0000000d 08 00000001 00004000 00004000".replace(" ", ""))  # cancel 1 16384 16384
        + bytes.fromhex("00000003 09 1ae1".replace(" ", ""))  # port 6881
        + bytes.fromhex("00000005 0d 00000002".replace(" ", ""))  # suggest 2
        + bytes.fromhex("00000005 11 00000001".replace(" ", ""))  # allowed fast 1
    )
    literal_messages = [
        hello(),
        m.BitfieldMessage(Bitfield(4, [0, 2])),
        m.KeepAlive(),
        m.Unchoke(),
        m.Choke(),
        m.Interested(),
        m.NotInterested(),
        m.Have(3),
        m.Request(1, 16384, 16384),
        m.Cancel(1, 16384, 16384),
        m.Port(6881),
        m.Suggest(2),
        m.AllowedFast(1),
    ]
    assert literal_stream == b"".join(msg.encode() for msg in literal_messages), "encode() disagrees with BEP 3/6 bytes"
    literal_piece = bytes.fromhex("0000000e 07 00000003 00001000 0102030405".replace(" ", ""))
    return [
        Vector("literal_bep3_bep6").raw(literal_stream, *literal_messages),
        Vector("literal_piece_last_block")
        .peer(hello(), m.HaveAll(), m.Unchoke())
        .we("request 3 4096 5")
        .raw(literal_piece, m.Piece(3, 4096, b"\x01\x02\x03\x04\x05")),
        opened("basic_fast_ext")
        .peer(m.ExtendedHandshake(client="libtorrent/2.1", listen_port=6881, reqq=250))
        .peer(m.BitfieldMessage(Bitfield(4, [0, 3])), m.Unchoke(), m.Have(1), m.KeepAlive())
        .peer(m.Interested(), m.NotInterested(), m.Port(6881), m.Have(2)),
        opened("extension_handshake_fields").raw(
            frame(20, b"\x00" + ext_payload),
            m.ExtendedHandshake(extensions={"ut_metadata": 3, "ut_pex": 0}, client="libtorrent/2.1", listen_port=6881, reqq=250),
        ),
        opened("extension_message").peer(m.HaveNone(), m.Extended(3, b"d1:xi1ee"), m.Extended(7, b"")),
        opened("fast_window_then_have_all").peer(
            m.KeepAlive(), m.ExtendedHandshake(), m.AllowedFast(0), m.AllowedFast(3), m.Port(1), m.HaveAll()
        ).peer(m.Suggest(2), m.Choke(), m.Unchoke(), m.Have(3)),
        opened("no_bitfield_peer").peer(m.Interested(), m.Have(0), m.Have(0)),
        opened("plain_peer", PLAIN).peer(m.BitfieldMessage(Bitfield.full(4)), m.Unchoke(), m.Choke()),
        opened("we_plain_peer_fast", fast=False, extensions=False).peer(m.BitfieldMessage(Bitfield(4)), m.Interested()),
        seeded("download_fast")
        .we("interested", "request 0 0 16384", "request 0 16384 16384", "request 3 0 5000", "request 2 16384 16384")
        .peer(piece(0, 16384, 16384), piece(0, 0, 16384), m.Reject(3, 0, 5000), m.KeepAlive())
        .we("cancel 2 16384 16384")
        .peer(m.Reject(2, 16384, 16384)),
        seeded("download_plain", PLAIN)
        .we("interested", "request 1 0 16384", "request 3 0 5000")
        .peer(piece(3, 0, 5000), piece(1, 0, 16384)),
        seeded("cancel_race_piece_still_arrives", PLAIN)
        .we("request 1 0 1024", "cancel 1 0 1024")
        .peer(piece(1, 0, 1024)),
        seeded("cancel_race_fast_piece_arrives")
        .we("request 1 0 1024", "cancel 1 0 1024")
        .peer(piece(1, 0, 1024)),
        seeded("choke_without_fast_piece_in_flight", PLAIN)
        .we("request 2 0 1024", "request 2 1024 1024")
        .peer(m.Choke(), piece(2, 1024, 1024), piece(2, 0, 1024)),
        seeded("choke_with_fast_keeps_requests")
        .we("request 2 0 1024", "request 2 1024 1024")
        .peer(m.Choke(), m.KeepAlive(), piece(2, 0, 1024), m.Reject(2, 1024, 1024)),
        opened("allowed_fast_while_choked")
        .peer(m.BitfieldMessage(Bitfield(4, [1, 2])), m.AllowedFast(2))
        .we("request 2 0 1024")
        .peer(piece(2, 0, 1024)),
        opened("upload_fast")
        .we("have_all", "unchoke")
        .peer(m.Interested(), m.Request(0, 0, 16384), m.Request(3, 4096, 904), m.Cancel(0, 0, 16384), m.Request(1, 100, 16384)),
        opened("requests_while_choked_fast", limits={"max_requests_while_choked": 3})
        .we("have_all", "allowed_fast 1")
        .peer(m.Request(0, 0, 16384), m.Request(0, 16384, 16384), m.Request(2, 0, 100))
        .peer(*(m.Request(1, begin, 1024) for begin in range(0, 10 * 1024, 1024))),
        opened("requests_after_choke_reset", PLAIN, limits={"max_requests_while_choked": 2})
        .we("unchoke")
        .peer(m.Request(0, 0, 16384), m.Request(0, 16384, 16384))
        .we("choke")
        .peer(m.Request(1, 0, 16384), m.Request(1, 16384, 16384))
        .we("unchoke", "choke")
        .peer(m.Request(2, 0, 16384), m.Request(2, 16384, 16384)),
        Vector("inbound_binds_after_handshake", inbound=True)
        .peer(hello())
        .we("bind")
        .peer(m.HaveNone(), m.Interested()),
        Vector("inbound_handshake_with_bitfield_in_one_read", inbound=True)
        .peer(hello(), m.BitfieldMessage(Bitfield(4, [1])))
        .we("bind"),
    ]


def bad_handshakes() -> list[Vector]:
    good = hello().encode()
    return [
        Vector("handshake_wrong_protocol").fails(good[:1] + b"BitTorrent protocoL" + good[20:], "not a BitTorrent handshake"),
        Vector("handshake_wrong_length_byte").fails(b"\x14" + good[1:], "not a BitTorrent handshake"),
        Vector("handshake_http_request").fails(b"GET /announce HTTP/1.1\r\n\r\n", "not a BitTorrent handshake"),
        Vector("handshake_wrong_info_hash").fails(hello(info_hash=b"\x01" * 20).encode(), "another torrent"),
        Vector("handshake_our_own_peer_id").fails(hello(peer_id=OUR_ID).encode(), "ourselves"),
        Vector("handshake_own_id_inbound", inbound=True).fails(hello(peer_id=OUR_ID).encode(), "ourselves"),
    ]


def bad_frames() -> list[Vector]:
    return [
        opened("length_huge").fails(b"\xff\xff\xff\xff" + b"\x07" * 32, "exceeds"),
        opened("length_just_over_cap", limits=SMALL_EXT).fails(struct.pack(">IB", PIECE_FRAME + 1, 7) + b"\x00" * 64, "exceeds"),
        opened("length_at_cap_is_not_an_error", limits=SMALL_EXT)
        .peer(m.HaveAll(), m.Unchoke())
        .we("request 1 16384 16384")
        .peer(piece(1, 16384, 16384)),
        opened("extension_payload_at_cap", limits=SMALL_EXT).peer(m.Extended(5, b"x" * 1000)),
        opened("extension_payload_over_cap", limits=SMALL_EXT).fails(frame(20, b"\x05" + b"x" * 1001), "extension message too large"),
        opened("unknown_id_10").fails(frame(10), "unknown message id 10"),
        opened("unknown_id_21_hash_request").fails(frame(21, b"\x00" * 48), "unknown message id 21"),
        opened("unknown_id_255").fails(frame(255, b"junk"), "unknown message id 255"),
        opened("choke_with_payload").fails(frame(0, b"\x00"), "choke message has 1 payload bytes"),
        opened("interested_with_payload").fails(frame(2, b"\x00\x00"), "interested message has 2"),
        opened("have_short").fails(frame(4, b"\x00\x00\x01"), "have message has 3"),
        opened("request_long").fails(frame(6, b"\x00" * 13), "request message has 13"),
        opened("port_short").fails(frame(9, b"\x1a"), "port message has 1"),
        opened("have_all_with_payload").fails(frame(0x0E, b"\x00"), "have_all message has 1"),
        opened("piece_too_short").fails(frame(7, b"\x00" * 8), "piece message too short"),
        opened("extended_without_id").fails(frame(20), "without an id"),
    ]


def bad_bitfields() -> list[Vector]:
    return [
        opened("bitfield_too_long").fails(frame(5, b"\xf0\x00"), "bitfield has 2 bytes"),
        opened("bitfield_empty").fails(frame(5), "bitfield has 0 bytes"),
        opened("bitfield_spare_bit").fails(frame(5, b"\xf1"), "spare bits"),
        opened("bitfield_twice").peer(m.BitfieldMessage(Bitfield(4, [0]))).fails(frame(5, b"\x80"), "BitfieldMessage not allowed"),
        opened("bitfield_after_have").peer(m.Have(0)).fails(frame(5, b"\x80"), "BitfieldMessage not allowed"),
        opened("have_all_after_bitfield").peer(m.BitfieldMessage(Bitfield(4))).fails(frame(0x0E), "HaveAll not allowed"),
        opened("have_none_twice").peer(m.HaveNone()).fails(frame(0x0F), "HaveNone not allowed"),
        opened("bitfield_after_unchoke").peer(m.Unchoke()).fails(frame(5, b"\x80"), "BitfieldMessage not allowed"),
    ]


def bad_indices() -> list[Vector]:
    over = 4
    return [
        opened("have_out_of_range").peer(m.HaveNone()).fails(m.Have(over).encode(), "have for piece 4"),
        opened("have_max_u32").peer(m.HaveNone()).fails(m.Have(2**32 - 1).encode(), "have for piece 4294967295"),
        opened("suggest_out_of_range").peer(m.HaveAll()).fails(m.Suggest(over).encode(), "suggest for piece 4"),
        opened("allowed_fast_out_of_range").fails(m.AllowedFast(over).encode(), "allowed_fast for piece 4"),
        opened("request_index_out_of_range").we("have_all", "unchoke").fails(m.Request(over, 0, 16384).encode(), "request for piece 4"),
        opened("request_over_16k").we("have_all", "unchoke").fails(m.Request(0, 0, 16385).encode(), "request of 16385 bytes"),
        opened("request_zero_length").we("have_all", "unchoke").fails(m.Request(0, 0, 0).encode(), "request of 0 bytes"),
        opened("request_past_piece_end").we("have_all", "unchoke").fails(m.Request(0, 20000, 16384).encode(), "past the end of piece 0"),
        opened("request_past_last_piece_end").we("have_all", "unchoke").fails(m.Request(3, 4096, 905).encode(), "past the end of piece 3"),
        opened("request_begin_huge").we("have_all", "unchoke").fails(m.Request(1, 2**32 - 1, 1).encode(), "past the end of piece 1"),
        opened("cancel_out_of_range").fails(m.Cancel(over, 0, 16384).encode(), "cancel for piece 4"),
        opened("reject_over_16k").fails(m.Reject(0, 0, 32768).encode(), "reject of 32768 bytes"),
    ]


def bad_requests() -> list[Vector]:
    return [
        opened("request_queue_flood", limits={"max_incoming_requests": 5})
        .we("have_all", "unchoke")
        .peer(*(m.Request(1, begin, 16) for begin in range(0, 80, 16)))
        .fails(m.Request(1, 80, 16).encode(), "more than 5 requests queued"),
        opened("request_flood_default_cap", extensions=False)
        .we("have_all", "unchoke")
        .peer(*(m.Request(i, begin, 16) for i in range(4) for begin in range(0, 125 * 16, 16)))
        .fails(m.Request(0, 4096, 16).encode(), "more than 500 requests queued"),
        opened("requests_while_choked_flood_fast", limits={"max_requests_while_choked": 3})
        .we("have_all")
        .peer(m.Request(0, 0, 16384), m.Request(0, 16384, 16384), m.Request(1, 0, 16384))
        .fails(m.Request(1, 16384, 16384).encode(), "more than 3 requests while choked"),
        opened("requests_while_choked_flood_plain", PLAIN, limits={"max_requests_while_choked": 3})
        .we("bitfield f0")
        .peer(m.Request(0, 0, 16384), m.Request(0, 16384, 16384), m.Request(1, 0, 16384))
        .fails(m.Request(1, 16384, 16384).encode(), "more than 3 requests while choked"),
        opened("allowed_fast_flood", limits={"max_allowed_fast": 2})
        .peer(m.AllowedFast(0), m.AllowedFast(1), m.AllowedFast(1))
        .fails(m.AllowedFast(2).encode(), "more than 2 allowed_fast"),
    ]


def bad_pieces() -> list[Vector]:
    return [
        seeded("piece_unrequested").fails(piece(0, 0, 1024).encode(), "unrequested block"),
        seeded("piece_wrong_length").we("request 0 0 1024").fails(piece(0, 0, 1000).encode(), "unrequested block"),
        seeded("piece_twice").we("request 0 0 1024").peer(piece(0, 0, 1024)).fails(piece(0, 0, 1024).encode(), "unrequested block"),
        seeded("piece_after_reject").we("request 0 0 1024").peer(m.Reject(0, 0, 1024)).fails(piece(0, 0, 1024).encode(), "unrequested block"),
        seeded("choke_plain_second_copy_unrequested", PLAIN)
        .we("request 2 0 1024")
        .peer(m.Choke(), piece(2, 0, 1024))
        .fails(piece(2, 0, 1024).encode(), "unrequested block"),
        seeded("cancel_race_second_copy", PLAIN)
        .we("request 1 0 1024", "cancel 1 0 1024")
        .peer(piece(1, 0, 1024))
        .fails(piece(1, 0, 1024).encode(), "unrequested block"),
        seeded("reject_never_requested").fails(m.Reject(0, 0, 1024).encode(), "reject for a block never requested"),
        seeded("reject_twice").we("request 0 0 1024").peer(m.Reject(0, 0, 1024)).fails(m.Reject(0, 0, 1024).encode(), "never requested"),
    ]


def bad_negotiation() -> list[Vector]:
    return [
        opened(f"{name}_without_fast", PLAIN).fails(msg.encode(), "without the fast extension")
        for name, msg in [
            ("have_all", m.HaveAll()),
            ("have_none", m.HaveNone()),
            ("suggest", m.Suggest(0)),
            ("allowed_fast", m.AllowedFast(0)),
            ("reject", m.Reject(0, 0, 16384)),
        ]
    ] + [
        opened("have_all_we_disabled_fast", fast=False).fails(m.HaveAll().encode(), "without the fast extension"),
        seeded("reject_without_fast_after_request", EXT_ONLY).we("request 0 0 16384").fails(m.Reject(0, 0, 16384).encode(), "without the fast extension"),
        opened("extended_without_bit", FAST_ONLY).fails(m.Extended(3, b"x").encode(), "without the extension protocol"),
        opened("ext_handshake_without_bit", FAST_ONLY).fails(m.ExtendedHandshake().encode(), "without the extension protocol"),
        opened("ext_handshake_we_disabled", extensions=False).fails(m.ExtendedHandshake().encode(), "without the extension protocol"),
        opened("ext_handshake_garbage").fails(frame(20, b"\x00" + b"d1:mde\xff"), "bad extension handshake"),
        opened("ext_handshake_truncated").fails(frame(20, b"\x00" + b"d1:md11:ut_metadatai3e"), "bad extension handshake"),
        opened("ext_handshake_not_dict").fails(frame(20, b"\x00" + b"li1ei2ee"), "not a dictionary"),
        opened("ext_handshake_m_not_dict").fails(frame(20, b"\x00" + b"d1:mi5ee"), "'m' is not a map"),
        opened("ext_handshake_m_id_too_big").fails(frame(20, b"\x00" + b"d1:md3:fooi300eee"), "'m' is not a map"),
        opened("ext_handshake_unsorted_keys").fails(frame(20, b"\x00" + b"d1:vi1e1:mdee"), "bad extension handshake"),
        opened("ext_handshake_too_deep").fails(frame(20, b"\x00" + b"d1:xlllllllleeeeeeeee"), "bad extension handshake"),
        opened("ext_handshake_huge_int").fails(frame(20, b"\x00" + b"d1:pi" + b"9" * 40 + b"ee"), "bad extension handshake"),
    ]


def all_vectors() -> list[Vector]:
    vectors = valid_vectors() + bad_handshakes() + bad_frames() + bad_bitfields() + bad_indices()
    vectors += bad_requests() + bad_pieces() + bad_negotiation()
    names = [v.name for v in vectors]
    assert len(names) == len(set(names)), "vector names must be unique"
    return vectors


def build() -> dict[str, bytes]:
    """Every file of this folder, by name, as bytes."""
    files: dict[str, bytes] = {}
    manifest = {
        "raw_info": RAW_INFO.hex(),
        "info_hash": INFO_HASH.hex(),
        "our_peer_id": OUR_ID.hex(),
        "vectors": [],
    }
    for vector in all_vectors():
        stream = b""
        steps: list[str] = []
        for kind, value in vector.steps:
            if kind == "peer":
                assert isinstance(value, bytes)
                steps.append(f"peer {len(stream)}:{len(stream) + len(value)}")
                stream += value
            else:
                steps.append(f"we {value}")
        files[f"{vector.name}.bin"] = stream
        manifest["vectors"].append(  # type: ignore[union-attr]
            {
                "name": vector.name,
                "file": f"{vector.name}.bin",
                "fast": vector.fast,
                "extensions": vector.extensions,
                "inbound": vector.inbound,
                "limits": vector.limits,
                "steps": steps,
                "events": vector.events,
                "error": vector.error,
            }
        )
    files["manifest.json"] = (json.dumps(manifest, indent=1) + "\n").encode()
    return files


def main() -> int:
    files = build()
    for old in HERE.glob("*.bin"):
        if old.name not in files:
            old.unlink()
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(files) - 1} vectors and manifest.json to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
