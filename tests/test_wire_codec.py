"""The sans-IO peer wire codec against byte vectors, random splits and its own transition table.

Vectors (tests/vectors/wire) are fed three ways, h11 style: whole, one byte at a time, and with
the first bytes of the next message trailing each read; both through ``receive_data`` and
through ``get_buffer``/``buffer_updated``. The events must be the same every time.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from p2pdist.bitfield import Bitfield
from p2pdist.errors import LocalError, ProtocolError
from p2pdist.metainfo import Layout, encode_torrent, parse_metainfo
from p2pdist.wire import messages as m
from p2pdist.wire import codec
from p2pdist.wire.codec import NEED_DATA, PeerWire, WireLimits
from p2pdist.wire.state import EXTENSION_ONLY, FAST_ONLY, TRANSITIONS, Phase

VECTORS = Path(__file__).parent / "vectors" / "wire"


def _load_generator():
    spec = importlib.util.spec_from_file_location("wire_vector_generator", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())
VECTOR_LIST = MANIFEST["vectors"]
LAYOUT = Layout(parse_metainfo(encode_torrent(bytes.fromhex(MANIFEST["raw_info"]))).info)
INFO_HASH = bytes.fromhex(MANIFEST["info_hash"])
OUR_ID = bytes.fromhex(MANIFEST["our_peer_id"])
# A partial `have` message: left over after a read, it must stay buffered.
PARTIAL = b"\x00\x00\x00\x05\x04\x00\x00"
Feed = Callable[[PeerWire, bytes], None]


def feed_receive(wire: PeerWire, data: bytes) -> None:
    wire.receive_data(data)


def feed_buffer(wire: PeerWire, data: bytes) -> None:
    """What asyncio's BufferedProtocol does: write into the codec's own buffer."""
    view = memoryview(data)
    for _ in range(len(data) + 1):
        if not view:
            return
        target = wire.get_buffer(len(view))
        take = min(len(target), len(view))
        target[:take] = view[:take]
        wire.buffer_updated(take)
        view = view[take:]
    raise AssertionError("get_buffer made no progress")


FEEDS: dict[str, Feed] = {"receive_data": feed_receive, "get_buffer": feed_buffer}


# -- running a vector -------------------------------------------------------------------------


class Run:
    """One vector played against one codec; records events and the error that ended it."""

    def __init__(self, vector: dict, feed: Feed) -> None:
        self.vector = vector
        self.feed = feed
        self.events: list[str] = []
        self.error: str | None = None
        self.peer_info_hash: bytes | None = None
        limits = WireLimits(**vector["limits"])
        options = dict(peer_id=OUR_ID, fast=vector["fast"], extensions=vector["extensions"], limits=limits)
        if vector["inbound"]:
            self.wire = PeerWire(**options)
        else:
            self.wire = PeerWire(info_hash=INFO_HASH, layout=LAYOUT, **options)
            self.wire.handshake()

    def drain(self) -> None:
        wire = self.wire
        for _ in range(100_000):
            if wire.phase is not Phase.AWAIT_HANDSHAKE and not wire.bound:
                return  # an inbound connection waits for bind() (a `we bind` step)
            event = wire.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, m.Handshake):
                self.peer_info_hash = event.info_hash
            self.events.append(gen.describe(event))
        raise AssertionError("next_event never returned NEED_DATA")

    def act(self, action: str) -> None:
        verb, *args = action.split()
        wire = self.wire
        numbers = [int(a) for a in args] if verb != "bitfield" else []
        if verb == "bind":
            assert self.peer_info_hash is not None
            wire.bind(LAYOUT, self.peer_info_hash)
            wire.handshake()
        elif verb == "bitfield":
            wire.send(m.BitfieldMessage(Bitfield.from_bytes(bytes.fromhex(args[0]), LAYOUT.num_pieces)))
        elif verb in ("request", "cancel", "reject"):
            wire.send({"request": m.Request, "cancel": m.Cancel, "reject": m.Reject}[verb](*numbers))
        elif verb == "allowed_fast":
            wire.send(m.AllowedFast(*numbers))
        else:
            simple = {
                "choke": m.Choke,
                "unchoke": m.Unchoke,
                "interested": m.Interested,
                "not_interested": m.NotInterested,
                "have_all": m.HaveAll,
                "have_none": m.HaveNone,
            }
            wire.send(simple[verb]())
        self.drain()

    def segments(self, stream: bytes) -> list[tuple[str, object]]:
        out: list[tuple[str, object]] = []
        for step in self.vector["steps"]:
            kind, rest = step.split(" ", 1)
            if kind == "peer":
                start, end = (int(x) for x in rest.split(":"))
                out.append(("peer", stream[start:end]))
            else:
                out.append(("we", rest))
        return out

    def play(self, stream: bytes, mode: str) -> None:
        """mode: whole | bytewise | trailing | a list of chunk sizes per peer step (hypothesis)."""
        steps = self.segments(stream)
        fed_ahead = 0  # bytes of the next peer segment already fed in trailing mode
        try:
            for position, (kind, value) in enumerate(steps):
                if kind == "we":
                    self.act(value)  # type: ignore[arg-type]
                    continue
                data = value[fed_ahead:]  # type: ignore[index]
                fed_ahead = 0
                if mode == "whole":
                    self.feed(self.wire, data)
                    self.drain()
                elif mode == "bytewise":
                    for i in range(len(data)):
                        self.feed(self.wire, data[i : i + 1])
                        self.drain()
                elif mode == "trailing":
                    following = [v for k, v in steps[position + 1 :] if k == "peer"]
                    if following:
                        fed_ahead = min(3, len(following[0]))  # type: ignore[arg-type]
                        tail = following[0][:fed_ahead]  # type: ignore[index]
                    else:
                        tail = PARTIAL
                    self.feed(self.wire, data + tail)
                    self.drain()
                else:
                    sizes = mode.pop(0)  # type: ignore[attr-defined]
                    for chunk in _chunks(data, sizes):
                        self.feed(self.wire, chunk)
                        self.drain()
        except ProtocolError as exc:
            self.error = str(exc)

    def check(self, mode: object = None) -> None:
        vector = self.vector
        assert self.events == vector["events"], f"feeding {mode}"
        if vector["error"] is None:
            assert self.error is None
            assert self.wire.phase is not Phase.CLOSED
        else:
            assert self.error is not None and vector["error"] in self.error, (mode, self.error)
            assert self.wire.phase is Phase.CLOSED
            for _ in range(2):  # the connection stays failed
                with pytest.raises(ProtocolError):
                    self.wire.next_event()
            with pytest.raises(ProtocolError):
                self.wire.receive_data(b"\x00\x00\x00\x00")


def _chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out, pos = [], 0
    for size in sizes:
        if pos >= len(data):
            break
        out.append(data[pos : pos + size])
        pos += size
    if pos < len(data):
        out.append(data[pos:])
    return out


def _stream(vector: dict) -> bytes:
    return (VECTORS / vector["file"]).read_bytes()


def test_vector_files_match_generator() -> None:
    files = gen.build()
    on_disk = {path.name for path in VECTORS.iterdir() if path.suffix in (".bin", ".json")}
    assert on_disk == set(files)
    for name, data in files.items():
        assert (VECTORS / name).read_bytes() == data, f"{name} differs: rerun tests/vectors/wire/generate.py"


def test_vectors_cover_every_message_and_many_errors() -> None:
    seen = {line.split()[0] for vector in VECTOR_LIST for line in vector["events"]}
    assert seen >= {
        "handshake", "keepalive", "choke", "unchoke", "interested", "notinterested", "have", "bitfield",
        "request", "piece", "cancel", "port", "suggest", "haveall", "havenone", "reject", "allowedfast",
        "extended", "ext_handshake",
    }
    assert sum(1 for vector in VECTOR_LIST if vector["error"]) >= 50


@pytest.mark.parametrize("via", sorted(FEEDS))
@pytest.mark.parametrize("vector", VECTOR_LIST, ids=[v["name"] for v in VECTOR_LIST])
def test_vector(vector: dict, via: str) -> None:
    for mode in ("whole", "bytewise", "trailing"):
        run = Run(vector, FEEDS[via])
        run.play(_stream(vector), mode)
        run.check(mode)
        if mode == "trailing" and vector["error"] is None:
            assert run.wire.next_event() is NEED_DATA
            assert run.wire.buffered == len(PARTIAL)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_vector_random_splits(data: st.DataObject) -> None:
    vector = data.draw(st.sampled_from(VECTOR_LIST), label="vector")
    via = data.draw(st.sampled_from(sorted(FEEDS)), label="via")
    peer_steps = sum(1 for step in vector["steps"] if step.startswith("peer"))
    sizes = [data.draw(st.lists(st.integers(1, 70_000), max_size=12), label="chunks") for _ in range(peer_steps)]
    run = Run(vector, FEEDS[via])
    run.play(_stream(vector), sizes)  # type: ignore[arg-type]
    run.check()


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_mixed_feeding_gives_the_same_events(data: st.DataObject) -> None:
    """receive_data and get_buffer may alternate between reads (a driver may switch)."""
    vector = data.draw(st.sampled_from([v for v in VECTOR_LIST if v["error"] is None]))
    choices = data.draw(st.lists(st.booleans(), min_size=1, max_size=40))

    def alternate(wire: PeerWire, chunk: bytes) -> None:
        (feed_receive if choices[len(chunk) % len(choices)] else feed_buffer)(wire, chunk)

    peer_steps = sum(1 for step in vector["steps"] if step.startswith("peer"))
    sizes = [data.draw(st.lists(st.integers(1, 5000), max_size=8)) for _ in range(peer_steps)]
    run = Run(vector, alternate)
    run.play(_stream(vector), sizes)  # type: ignore[arg-type]
    run.check()


# -- round trips --------------------------------------------------------------------------------

U32 = st.integers(0, 2**32 - 1)
INDEX = st.integers(0, LAYOUT.num_pieces - 1)


@st.composite
def blocks(draw: st.DrawFn) -> tuple[int, int, int]:
    index = draw(INDEX)
    size = LAYOUT.piece_size(index)
    begin = draw(st.integers(0, size - 1))
    length = draw(st.integers(1, min(16384, size - begin)))
    return index, begin, length


MESSAGES: dict[type, st.SearchStrategy] = {
    m.KeepAlive: st.just(m.KeepAlive()),
    m.Choke: st.just(m.Choke()),
    m.Unchoke: st.just(m.Unchoke()),
    m.Interested: st.just(m.Interested()),
    m.NotInterested: st.just(m.NotInterested()),
    m.HaveAll: st.just(m.HaveAll()),
    m.HaveNone: st.just(m.HaveNone()),
    m.Have: INDEX.map(m.Have),
    m.Suggest: INDEX.map(m.Suggest),
    m.AllowedFast: INDEX.map(m.AllowedFast),
    m.BitfieldMessage: st.sets(INDEX).map(lambda bits: m.BitfieldMessage(Bitfield(LAYOUT.num_pieces, bits))),
    m.Request: blocks().map(lambda b: m.Request(*b)),
    m.Cancel: blocks().map(lambda b: m.Cancel(*b)),
    m.Reject: blocks().map(lambda b: m.Reject(*b)),
    m.Piece: blocks().flatmap(lambda b: st.binary(min_size=b[2], max_size=b[2]).map(lambda d: m.Piece(b[0], b[1], d))),
    m.Port: st.integers(0, 65535).map(m.Port),
    m.Extended: st.builds(m.Extended, st.integers(1, 255), st.binary(max_size=2000)),
    m.ExtendedHandshake: st.builds(
        m.ExtendedHandshake,
        extensions=st.dictionaries(st.text(st.characters(codec="utf-8"), min_size=1, max_size=20), st.integers(0, 255), max_size=8),
        client=st.none() | st.text(max_size=40),
        listen_port=st.none() | st.integers(1, 65535),
        reqq=st.none() | st.integers(1, 999_999),
    ),
}
EXPECTED_ID = {
    m.Choke: 0, m.Unchoke: 1, m.Interested: 2, m.NotInterested: 3, m.Have: 4, m.BitfieldMessage: 5,
    m.Request: 6, m.Piece: 7, m.Cancel: 8, m.Port: 9, m.Suggest: 0x0D, m.HaveAll: 0x0E, m.HaveNone: 0x0F,
    m.Reject: 0x10, m.AllowedFast: 0x11, m.Extended: 20, m.ExtendedHandshake: 20,
}


def test_every_message_type_has_a_strategy() -> None:
    assert set(MESSAGES) == set(m.Message.__args__)  # type: ignore[attr-defined]
    assert set(MESSAGES) | {m.Handshake} == {kind for _, kind in TRANSITIONS}


def test_every_message_id_but_piece_has_a_decoder() -> None:
    # Piece messages are read inline on the hot path; every other id goes through the table.
    assert set(codec._DECODERS) == {int(kind) for kind in m.MessageId} - {int(m.MessageId.PIECE)}


def opened_wire(*, fast: bool = True, extensions: bool = True, reserved: bytes | None = None, limits: WireLimits = WireLimits()) -> PeerWire:
    """Our codec after both handshakes, waiting for the peer's first message."""
    wire = PeerWire(peer_id=OUR_ID, info_hash=INFO_HASH, layout=LAYOUT, fast=fast, extensions=extensions, limits=limits)
    wire.handshake()
    peer = m.Handshake(INFO_HASH, gen.PEER_ID, reserved if reserved is not None else m.make_reserved())
    wire.receive_data(peer.encode())
    assert wire.next_event() == peer
    return wire


def prime(wire: PeerWire, message: object) -> None:
    """Make a piece or reject content-legal: the block must be one we asked for.

    Set directly so the phase stays where the test put it (a real request needs an unchoke,
    which would move the phase on).
    """
    if isinstance(message, m.Piece):
        wire.requests_out[(message.index, message.begin, len(message.data))] = None
    elif isinstance(message, m.Reject):
        wire.requests_out[(message.index, message.begin, message.length)] = None


@settings(max_examples=300, deadline=None)
@given(message=st.one_of(*MESSAGES.values()), split=st.integers(0, 100_000))
def test_round_trip(message: object, split: int) -> None:
    raw = message.encode()  # type: ignore[attr-defined]
    (length,) = struct.unpack_from(">I", raw)
    assert length == len(raw) - 4
    if not isinstance(message, m.KeepAlive):
        assert raw[4] == EXPECTED_ID[type(message)]
    wire = opened_wire()
    prime(wire, message)
    cut = split % (len(raw) + 1)
    wire.receive_data(raw[:cut])
    if cut < len(raw):
        assert wire.next_event() is NEED_DATA
    wire.receive_data(raw[cut:])
    assert wire.next_event() == message
    assert wire.next_event() is NEED_DATA
    assert wire.buffered == 0


@settings(max_examples=50, deadline=None)
@given(reserved=st.binary(min_size=8, max_size=8), peer_id=st.binary(min_size=20, max_size=20))
def test_handshake_round_trip(reserved: bytes, peer_id: bytes) -> None:
    wire = PeerWire(peer_id=OUR_ID, info_hash=INFO_HASH, layout=LAYOUT)
    sent = m.Handshake(INFO_HASH, peer_id, reserved)
    wire.receive_data(sent.encode())
    if peer_id == OUR_ID:
        with pytest.raises(ProtocolError):
            wire.next_event()
        return
    assert wire.next_event() == sent
    assert wire.fast == sent.supports_fast == bool(reserved[7] & 0x04)
    assert wire.extensions == sent.supports_extensions == bool(reserved[5] & 0x10)


def test_piece_header_matches_encode() -> None:
    wire = opened_wire()
    wire.send(m.HaveAll())
    wire.send(m.Unchoke())
    for request in (m.Request(0, 0, 16384), m.Request(3, 4096, 904)):
        wire.receive_data(request.encode())
        assert wire.next_event() == request
    data = gen.block(0, 0, 16384)
    assert wire.piece_header(0, 0, 16384) + data == m.Piece(0, 0, data).encode()
    assert wire.send(m.Piece(3, 4096, bytes(904))) == m.Piece(3, 4096, bytes(904)).encode()
    assert wire.requests_in == {}


def test_our_extension_handshake_advertises_queue_and_no_extensions() -> None:
    wire = opened_wire(limits=WireLimits(max_incoming_requests=321))
    raw = wire.extension_handshake(client="p2pdist/0.1", listen_port=6881)
    reader = opened_wire()
    reader.receive_data(raw)
    event = reader.next_event()
    assert isinstance(event, m.ExtendedHandshake)
    assert (event.extensions, event.client, event.listen_port, event.reqq) == ({}, "p2pdist/0.1", 6881, 321)


# -- every (phase, message) pair ----------------------------------------------------------------

DESCRIBE = (m.BitfieldMessage, m.HaveAll, m.HaveNone)
KEEPS_WINDOW = (m.KeepAlive, m.ExtendedHandshake, m.Extended, m.AllowedFast, m.Port)
SAMPLE: dict[type, object] = {
    m.Handshake: m.Handshake(INFO_HASH, gen.PEER_ID),
    m.KeepAlive: m.KeepAlive(),
    m.Choke: m.Choke(),
    m.Unchoke: m.Unchoke(),
    m.Interested: m.Interested(),
    m.NotInterested: m.NotInterested(),
    m.HaveAll: m.HaveAll(),
    m.HaveNone: m.HaveNone(),
    m.Have: m.Have(3),
    m.Suggest: m.Suggest(1),
    m.AllowedFast: m.AllowedFast(2),
    m.BitfieldMessage: m.BitfieldMessage(Bitfield(4, [0, 3])),
    m.Request: m.Request(1, 0, 16384),
    m.Cancel: m.Cancel(1, 0, 16384),
    m.Reject: m.Reject(1, 16384, 16384),
    m.Piece: m.Piece(2, 0, b"abc"),
    m.Port: m.Port(6881),
    m.Extended: m.Extended(9, b"payload"),
    m.ExtendedHandshake: m.ExtendedHandshake(client="x"),
}


def model(phase: Phase, kind: type, fast: bool, ext: bool) -> Phase | None:
    """The rules as BEP 3/6/10 state them (plus the AWAIT_FIRST window): next phase or None."""
    if phase is Phase.CLOSED:
        return None
    if phase is Phase.AWAIT_HANDSHAKE:
        return Phase.AWAIT_FIRST if kind is m.Handshake else None
    if kind is m.Handshake:
        return None
    if kind in (m.HaveAll, m.HaveNone, m.Suggest, m.Reject, m.AllowedFast) and not fast:
        return None  # BEP 6: MUST close
    if kind in (m.Extended, m.ExtendedHandshake) and not ext:
        return None  # BEP 10: only with the reserved bit
    if kind in DESCRIBE:
        return Phase.RUNNING if phase is Phase.AWAIT_FIRST else None  # BEP 3/6: only first
    if phase is Phase.AWAIT_FIRST and kind in KEEPS_WINDOW:
        return Phase.AWAIT_FIRST
    return Phase.RUNNING


def wire_in(phase: Phase, fast: bool, ext: bool) -> PeerWire:
    if phase is Phase.AWAIT_HANDSHAKE:
        wire = PeerWire(peer_id=OUR_ID, info_hash=INFO_HASH, layout=LAYOUT)
        wire.handshake()
        return wire
    wire = opened_wire(reserved=m.make_reserved(extensions=ext, fast=fast))
    if phase is Phase.RUNNING:
        wire.receive_data(m.Interested().encode())
        assert wire.next_event() == m.Interested()
    elif phase is Phase.CLOSED:
        wire.receive_data(b"\x00\x00\x00\x01\x63")
        with pytest.raises(ProtocolError):
            wire.next_event()
    assert wire.phase is phase
    return wire


def test_table_matches_the_rules() -> None:
    for phase in Phase:
        for kind in SAMPLE:
            assert TRANSITIONS.get((phase, kind)) == model(phase, kind, True, True), (phase, kind)
    assert set(FAST_ONLY) == {m.HaveAll, m.HaveNone, m.Suggest, m.Reject, m.AllowedFast}
    assert set(EXTENSION_ONLY) == {m.Extended, m.ExtendedHandshake}


NEGOTIATIONS = [(fast, ext) for fast in (True, False) for ext in (True, False)]


@pytest.mark.parametrize("kind", list(SAMPLE), ids=[k.__name__ for k in SAMPLE])
@pytest.mark.parametrize("phase", list(Phase), ids=[p.name for p in Phase])
def test_every_phase_message_pair(phase: Phase, kind: type) -> None:
    for fast, ext in NEGOTIATIONS:
        context = f"{phase.name} {kind.__name__} fast={fast} ext={ext}"
        wire = wire_in(phase, fast, ext)
        message = SAMPLE[kind]
        prime(wire, message)
        expected = model(phase, kind, fast, ext)
        by_table = TRANSITIONS.get((phase, kind)) is not None and (fast or kind not in FAST_ONLY) and (ext or kind not in EXTENSION_ONLY)
        assert by_table == (expected is not None), context
        if phase is Phase.CLOSED:
            with pytest.raises(ProtocolError):
                wire.receive_data(message.encode())  # type: ignore[attr-defined]
        else:
            wire.receive_data(message.encode())  # type: ignore[attr-defined]
        if expected is None:
            with pytest.raises(ProtocolError):
                wire.next_event()
            assert wire.phase is Phase.CLOSED, context
            with pytest.raises(ProtocolError):
                wire.next_event()
        else:
            assert wire.next_event() == message, context
            assert wire.phase is expected, context
            assert wire.next_event() is NEED_DATA, context


@pytest.mark.parametrize("fast, ext", NEGOTIATIONS, ids=["fast-ext", "fast", "ext", "plain"])
@pytest.mark.parametrize("kind", [k for k in SAMPLE if k is not m.Handshake], ids=lambda k: k.__name__)
def test_send_follows_the_same_negotiation(kind: type, fast: bool, ext: bool) -> None:
    """What we may send mirrors what we accept: a peer would close on anything else."""
    wire = opened_wire(reserved=m.make_reserved(extensions=ext, fast=fast))
    if fast:  # so a request while choked is legal
        wire.receive_data(m.AllowedFast(1).encode())
        assert wire.next_event() == m.AllowedFast(1)
    message = SAMPLE[kind]
    if kind is m.Piece:
        key = (2, 0, 3)
        wire.receive_data(m.Request(*key).encode())
        assert wire.next_event() == m.Request(*key)
    allowed = not (kind in FAST_ONLY and not fast) and not (kind in EXTENSION_ONLY and not ext)
    if kind is m.Request and not fast:
        allowed = False  # choked, and no allowed_fast without BEP 6
    if kind is m.Piece and not fast:
        allowed = False  # BEP 3: a request that arrives while we choke is dropped, not owed
    if allowed:
        assert wire.send(message) == message.encode()  # type: ignore[attr-defined]
    else:
        with pytest.raises(LocalError):
            wire.send(message)


# -- two codecs talking (hypothesis state machine) -----------------------------------------------


class TwoPeers(RuleBasedStateMachine):
    """A downloads from B over two byte pipes delivered in random pieces.

    Every action is legal from the sender's point of view, so the receiver must never raise;
    when both pipes are drained the two sides agree on choking and interest, and once B has
    answered all it owes, A waits for nothing.
    """

    @initialize(fast=st.booleans(), ext=st.booleans())
    def start(self, fast: bool, ext: bool) -> None:
        self.fast = fast
        self.a = PeerWire(peer_id=b"A" * 20, info_hash=INFO_HASH, layout=LAYOUT, fast=fast, extensions=ext)
        self.b = PeerWire(peer_id=b"B" * 20, info_hash=INFO_HASH, layout=LAYOUT)
        self.to_a = bytearray(self.b.handshake())
        self.to_b = bytearray(self.a.handshake())
        self.sent_pieces: list[m.Piece] = []
        self.got_pieces: list[m.Piece] = []
        self.deliver_all()
        self.to_a += self.b.send(m.HaveAll() if fast else m.BitfieldMessage(Bitfield.full(4)))
        self.to_b += self.a.send(m.BitfieldMessage(Bitfield(4)))
        if ext:
            self.to_a += self.b.extension_handshake(client="b")
        self.a_allowed: set[int] = set()

    def _drain(self, wire: PeerWire, received: list[m.Piece]) -> None:
        for _ in range(10_000):
            event = wire.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, m.Piece):
                received.append(event)

    def deliver(self, to_a: bool, count: int) -> None:
        pipe, wire = (self.to_a, self.a) if to_a else (self.to_b, self.b)
        chunk = bytes(pipe[:count])
        del pipe[:count]
        wire.receive_data(chunk)
        self._drain(wire, self.got_pieces if to_a else [])

    def deliver_all(self) -> None:
        for _ in range(4):
            self.deliver(True, len(self.to_a))
            self.deliver(False, len(self.to_b))

    @rule(to_a=st.booleans(), count=st.integers(1, 20_000))
    def pipe(self, to_a: bool, count: int) -> None:
        self.deliver(to_a, count)

    @rule(interested=st.booleans())
    def a_interest(self, interested: bool) -> None:
        self.to_b += self.a.send(m.Interested() if interested else m.NotInterested())

    @rule(unchoke=st.booleans())
    def b_choke(self, unchoke: bool) -> None:
        self.to_a += self.b.send(m.Unchoke() if unchoke else m.Choke())

    @precondition(lambda self: self.fast)
    @rule(index=INDEX)
    def b_allowed_fast(self, index: int) -> None:
        self.to_a += self.b.send(m.AllowedFast(index))

    @rule(block=blocks())
    def a_request(self, block: tuple[int, int, int]) -> None:
        if len(self.a.requests_out) >= 100 or block in self.a.requests_out:
            return
        if self.a.peer_choking and block[0] not in self.a.allowed_fast_in:
            with pytest.raises(LocalError):
                self.a.send(m.Request(*block))
            return
        self.to_b += self.a.send(m.Request(*block))

    @precondition(lambda self: bool(self.a.requests_out))
    @rule(which=st.integers(0, 10_000))
    def a_cancel(self, which: int) -> None:
        keys = list(self.a.requests_out)
        self.to_b += self.a.send(m.Cancel(*keys[which % len(keys)]))

    @precondition(lambda self: bool(self.b.requests_in))
    @rule(which=st.integers(0, 10_000), reject=st.booleans(), header=st.booleans())
    def b_answer(self, which: int, reject: bool, header: bool) -> None:
        keys = list(self.b.requests_in)
        index, begin, length = keys[which % len(keys)]
        if reject and self.fast:
            self.to_a += self.b.send(m.Reject(index, begin, length))
            return
        data = gen.block(index, begin, length)
        self.sent_pieces.append(m.Piece(index, begin, data))
        if header:
            self.to_a += self.b.piece_header(index, begin, length) + data
        else:
            self.to_a += self.b.send(m.Piece(index, begin, data))

    @rule()
    def quiesce(self) -> None:
        self.deliver_all()
        a, b = self.a, self.b
        assert a.peer_choking == b.am_choking
        assert b.peer_interested == a.am_interested
        # Everything A waits for, B owes. B may owe more: a request that crossed a choke
        # (BEP 3), or a block A cancelled and asked for again; A accepts those answers too.
        assert set(a.requests_out) <= set(b.requests_in)
        assert a.allowed_fast_in == b.allowed_fast_out
        assert self.got_pieces == self.sent_pieces

    @rule(reject=st.booleans())
    def settle(self, reject: bool) -> None:
        """B answers all it owes; afterwards nobody waits for anything."""
        self.deliver_all()
        for index, begin, length in list(self.b.requests_in):
            if reject and self.fast:
                self.to_a += self.b.send(m.Reject(index, begin, length))
            else:
                data = gen.block(index, begin, length)
                self.sent_pieces.append(m.Piece(index, begin, data))
                self.to_a += self.b.send(m.Piece(index, begin, data))
        self.deliver_all()
        assert self.a.requests_out == {} and self.b.requests_in == {}
        assert self.got_pieces == self.sent_pieces

    @invariant()
    def nobody_failed(self) -> None:
        if hasattr(self, "a"):
            assert self.a.phase is not Phase.CLOSED and self.b.phase is not Phase.CLOSED


TestTwoPeers = TwoPeers.TestCase
TestTwoPeers.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
