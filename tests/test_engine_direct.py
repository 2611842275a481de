"""Scatter reads into piece buffers (engine/direct.py) against scripted seeds on real sockets.

The scripted seed answers our requests the way a test wants: in order (every block should land
in place), out of order, with other messages in between, cut into random write sizes, with a
header that lies, or with corrupt data. Whatever it does, the download must come out byte for
byte right, and a lying peer must end only its own connection.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from p2pdist.engine import direct
from p2pdist.engine.session import Session
from p2pdist.engine.settings import EngineSettings
from p2pdist.storage.memory import MemoryStorage
from p2pdist.wire import messages as m
from tests.support.torrents import make_torrent, random_bytes

pytestmark = pytest.mark.skipif(not direct.SUPPORTED, reason="scatter reads need recvmsg_into (POSIX)")

PIECE = 256 * 1024
DATA = random_bytes(3 * 1024 * 1024 + 5000, seed=11)  # a short last piece and a short last block
RAW, META = make_torrent({"pkg.bin": DATA}, single=True, name="pkg.bin", piece_length=PIECE)
SETTINGS = EngineSettings(listen_host="127.0.0.1", listen_port=0, tick_interval=0.1, choke_interval=0.5)

HONEST_HOST = "127.0.0.2"

Answer = Callable[[list[tuple[int, int, int]], random.Random], list[bytes]]


def _block(index: int, begin: int, length: int, *, corrupt: bool = False) -> bytes:
    start = index * PIECE + begin
    payload = bytearray(DATA[start : start + length])
    if corrupt:
        payload[0] ^= 0xFF
    return struct.pack(">IBII", 9 + length, 7, index, begin) + bytes(payload)


def in_order(requests: list[tuple[int, int, int]], rng: random.Random) -> list[bytes]:
    return [_block(*key) for key in requests]


def shuffled(requests: list[tuple[int, int, int]], rng: random.Random) -> list[bytes]:
    order = list(requests)
    rng.shuffle(order)
    return [_block(*key) for key in order]


def with_chatter(requests: list[tuple[int, int, int]], rng: random.Random) -> list[bytes]:
    out = []
    for key in requests:
        if rng.random() < 0.3:
            out.append(m.KeepAlive().encode() if rng.random() < 0.5 else m.Have(rng.randrange(META.info.num_pieces)).encode())
        out.append(_block(*key))
    return out


def corrupt_some(requests: list[tuple[int, int, int]], rng: random.Random) -> list[bytes]:
    return [_block(*key, corrupt=key[1] == 0) for key in requests]


class ScriptedSeed:
    """A seed that has everything and answers requests as ``answer`` says, in random-size writes."""

    def __init__(self, answer: Answer, seed: int, *, lie_after: int | None = None) -> None:
        self.answer = answer
        self.rng = random.Random(seed)
        self.lie_after = lie_after  # send a piece for an unrequested block after this many
        self.sent_blocks = 0
        self.closed_by_peer = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readexactly(m.HANDSHAKE_LEN)
            writer.write(m.Handshake(META.info_hash, b"-XX0001-" + bytes(12), m.make_reserved(fast=True)).encode())
            writer.write(m.HaveAll().encode() + m.Unchoke().encode())
            pending: list[tuple[int, int, int]] = []
            async with asyncio.timeout(30):
                while True:
                    try:
                        header = await asyncio.wait_for(reader.readexactly(4), 0.02 if pending else 5)
                    except TimeoutError:
                        await self._answer(writer, pending)
                        pending = []
                        continue
                    (length,) = struct.unpack(">I", header)
                    body = await reader.readexactly(length)
                    if length == 13 and body[0] == 6:
                        pending.append(struct.unpack(">III", body[1:]))
                        if len(pending) >= 48:
                            await self._answer(writer, pending)
                            pending = []
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_peer.set()
        except TimeoutError:
            pass
        finally:
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, requests: list[tuple[int, int, int]]) -> None:
        messages = self.answer(requests, self.rng)
        if self.lie_after is not None and self.sent_blocks + len(messages) > self.lie_after:
            # A piece message for a block nobody asked this peer for, among honest ones.
            messages.insert(len(messages) // 2, _block(META.info.num_pieces - 1, 0, 16384))
        self.sent_blocks += len(messages)
        stream = b"".join(messages)
        position = 0
        while position < len(stream):
            size = self.rng.choice((1, 13, 100, 16397, 70_000, 300_000))
            writer.write(stream[position : position + size])
            position += size
            if self.rng.random() < 0.2:
                await writer.drain()
                await asyncio.sleep(0)
        await writer.drain()


@pytest.fixture
def readers(monkeypatch: pytest.MonkeyPatch) -> list[direct.DirectReader]:
    """Every DirectReader made during the test (to see how many bytes landed in place)."""
    made: list[direct.DirectReader] = []
    original = direct.DirectReader.__init__

    def recording(self: direct.DirectReader, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        made.append(self)

    monkeypatch.setattr(direct.DirectReader, "__init__", recording)
    return made


async def _download(
    seeds: list[int], settings: EngineSettings = SETTINGS, *, timeout: float = 30, later: tuple[asyncio.Event, tuple[str, int]] | None = None
) -> tuple[bytes, int]:
    """Download from ``seeds`` (and from ``later``'s port once its event is set); the content
    read back from storage and the number of hash failures."""
    session = Session(settings, rng=random.Random(3))
    await session.start()
    try:
        storage = MemoryStorage(META.info)
        torrent = await session.add_torrent(META, storage)
        torrent.add_peer_addresses([("127.0.0.1", port) for port in seeds])
        async with asyncio.timeout(timeout):
            if later is not None:
                event, address = later
                await event.wait()
                torrent.add_peer_addresses([address])
            await torrent.completed.wait()
        # Block views are cached per buffer; none may outlive its buffer's time with us (the
        # pool or a piece being assembled), or the cache would keep dropped buffers alive. A
        # piece that failed before may still be settling (smart-ban digests) for a moment.
        for _ in range(100):
            live = {id(buffer) for buffer in [*torrent.receiver.pool, *torrent.receiver.partial.values()]}
            if set(torrent.receiver.views) <= live:
                break
            await asyncio.sleep(0.01)
        assert set(torrent.receiver.views) <= live
        pieces = [await storage.read_block(i, 0, META.info.piece_size(i)) for i in range(META.info.num_pieces)]
        return b"".join(pieces), torrent.hash_failures
    finally:
        await session.close()


@pytest.mark.parametrize("answer", [in_order, shuffled, with_chatter], ids=lambda f: f.__name__)
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_any_order_and_any_write_sizes_give_the_same_bytes(answer: Answer, seed: int, readers: list) -> None:
    scripted = ScriptedSeed(answer, seed)
    port = await scripted.start()
    try:
        content, failures = await _download([port])
    finally:
        await scripted.stop()
    assert content == DATA
    assert failures == 0
    if answer is in_order:
        # The prediction holds for a peer that answers in order: most data lands in place.
        assert readers and sum(reader.placed_bytes for reader in readers) > len(DATA) // 2
        # Big reads on this fast link: the reader paused to let more gather, and came back.
        assert sum(reader.coalesced for reader in readers) > 0
    if answer is with_chatter:
        # Wrong guesses cost a copy more than plain reads: after each, it reads plainly for a
        # while (without that back-off this peer gets about ten planned reads and no plain one).
        assert sum(r.planned_reads for r in readers) < sum(r.plain_reads for r in readers)


async def test_without_direct_receive_nothing_is_read_in_place(readers: list) -> None:
    scripted = ScriptedSeed(in_order, 4)
    port = await scripted.start()
    try:
        content, _ = await _download([port], EngineSettings(listen_host="127.0.0.1", listen_port=0, direct_receive=False))
    finally:
        await scripted.stop()
    assert content == DATA
    assert not readers


async def _honest_seed() -> Session:
    """A real p2pdist seed on 127.0.0.2: peers are banned by address, and the bad peer is on .1."""
    session = Session(EngineSettings(listen_host=HONEST_HOST, listen_port=0), rng=random.Random(7))
    await session.start()
    await session.add_torrent(META, MemoryStorage.from_data(META.info, DATA))
    return session


async def test_a_lying_header_ends_that_peer_and_the_download_still_verifies(readers: list) -> None:
    liar = ScriptedSeed(in_order, 5, lie_after=40)
    liar_port = await liar.start()
    honest = await _honest_seed()
    try:
        # The honest seed joins only once the liar was cut off, so the liar's blocks are read.
        content, failures = await _download([liar_port], later=(liar.closed_by_peer, (HONEST_HOST, honest.port)))
    finally:
        await liar.stop()
        await honest.close()
    assert content == DATA
    assert failures == 0
    assert readers and sum(reader.placed_bytes for reader in readers) > 0


async def test_corrupt_blocks_read_in_place_fail_their_piece_and_are_fetched_again(readers: list) -> None:
    corrupter = ScriptedSeed(corrupt_some, 6)
    corrupter_port = await corrupter.start()
    honest = await _honest_seed()
    banned = asyncio.Event()

    async def watch() -> None:
        while not corrupter.closed_by_peer.is_set():  # banned after repeated failures
            await asyncio.sleep(0.01)
        banned.set()

    watcher = asyncio.create_task(watch())
    try:
        content, failures = await _download([corrupter_port], later=(banned, (HONEST_HOST, honest.port)))
    finally:
        watcher.cancel()
        await corrupter.stop()
        await honest.close()
    assert content == DATA
    assert failures >= 2  # its pieces failed their hash (and it was banned) before the refetch
    assert sum(reader.placed_bytes for reader in readers) > 0


async def test_a_rate_limited_download_pauses_and_resumes_direct_reads(readers: list) -> None:
    scripted = ScriptedSeed(in_order, 8)
    port = await scripted.start()
    limited = EngineSettings(listen_host="127.0.0.1", listen_port=0, tick_interval=0.1, download_rate_limit=1 << 20)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        content, _ = await _download([port], limited)
    finally:
        await scripted.stop()
    assert content == DATA
    assert loop.time() - started >= 0.8  # 3 MiB at 1 MiB/s after a burst of 1 MiB
    assert sum(reader.placed_bytes for reader in readers) > 0


async def test_a_coalescing_pause_ends_by_itself_unless_reading_was_stopped_meanwhile() -> None:
    """The pause after a short fast read resumes on its own; a rate limiter's stop during it
    wins (only its start resumes), a start ends it early, and a closed peer stays unread."""
    left, right = socket.socketpair()
    conn = SimpleNamespace(closed=False)
    reader = direct.DirectReader(conn, left, owner=None)  # type: ignore[arg-type]
    wait = direct.COALESCE_SECONDS * 10
    try:
        reader.start()
        reader._coalesce()
        assert not reader.reading and reader.coalescing
        await asyncio.sleep(wait)
        assert reader.reading and not reader.coalescing

        reader._coalesce()
        reader.stop()  # the rate limiter pauses reading meanwhile
        await asyncio.sleep(wait)
        assert not reader.reading and not reader.coalescing
        reader.start()  # ... and resumes it
        assert reader.reading

        reader._coalesce()
        reader.start()  # resumed early: one reader on the socket, no pause left behind
        assert reader.reading and not reader.coalescing
        await asyncio.sleep(wait)
        assert reader.reading

        reader._coalesce()
        conn.closed = True
        await asyncio.sleep(wait)
        assert not reader.reading
    finally:
        reader.close()
        left.close()
        right.close()
