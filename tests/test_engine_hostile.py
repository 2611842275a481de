"""Hostile peers against a real p2pdist session: each ends only its own connection.

The hostile side is written by hand with the wire messages' encoders over a raw asyncio stream,
so it can say what no well-behaved codec would send.
"""

from __future__ import annotations

import asyncio
import random
import struct

import pytest

from p2pdist.engine.session import Session
from p2pdist.engine.settings import EngineSettings
from p2pdist.bitfield import Bitfield
from p2pdist.storage.memory import MemoryStorage
from p2pdist.wire import messages as m
from tests.support.torrents import make_torrent, random_bytes

SETTINGS = EngineSettings(listen_host="127.0.0.1", listen_port=0, tick_interval=0.1, choke_interval=0.5, handshake_timeout=1.0)
DATA = random_bytes(400_000, seed=5)
RAW, META = make_torrent({"pkg.bin": DATA}, single=True, name="pkg.bin", piece_length=32 * 1024)


async def _seed() -> tuple[Session, object]:
    session = Session(SETTINGS, rng=random.Random(1))
    await session.start()
    torrent = await session.add_torrent(META, MemoryStorage.from_data(META.info, DATA))
    return session, torrent


async def _handshake(port: int, *, fast: bool = True) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(m.Handshake(META.info_hash, b"-XX0001-" + bytes(12), m.make_reserved(fast=fast)).encode())
    await reader.readexactly(m.HANDSHAKE_LEN)
    return reader, writer


async def _closed_by_peer(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    """Read until EOF; True when the other side closed within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


async def _still_serves(port: int) -> None:
    """A well-behaved leecher still gets the whole torrent from the attacked seed."""
    session = Session(SETTINGS, rng=random.Random(2))
    await session.start()
    try:
        storage = MemoryStorage(META.info)
        torrent = await session.add_torrent(META, storage)
        torrent.add_peer_addresses([("127.0.0.1", port)])
        await asyncio.wait_for(torrent.completed.wait(), 20)
    finally:
        await session.close()


def _msg(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", 1 + len(payload), kind) + payload


HOSTILE = {
    "oversized length": struct.pack(">I", 1 << 30) + b"\x07",
    "bitfield wrong size": _msg(5, b"\xff"),
    "bitfield spare bits": _msg(5, b"\xff" * ((META.info.num_pieces + 7) // 8 - 1) + b"\xff"),
    "have out of range": _msg(0x0F) + _msg(4, struct.pack(">I", 10_000)),
    "request past piece": _msg(0x0F) + _msg(2) + _msg(6, struct.pack(">III", 0, 32 * 1024 - 100, 16 * 1024)),
    "request too long": _msg(0x0F) + _msg(2) + _msg(6, struct.pack(">III", 0, 0, 64 * 1024)),
    "unrequested piece": _msg(0x0F) + _msg(7, struct.pack(">II", 0, 0) + bytes(16384)),
    "unknown message id": _msg(0x0F) + _msg(0x42, b"x"),
    "second bitfield": _msg(0x0F) + _msg(0x0E),
    "extension garbage": _msg(0x0F) + _msg(20, b"\x00" + b"d1:m"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_message_ends_only_that_peer(name: str) -> None:
    session, torrent = await _seed()
    try:
        reader, writer = await _handshake(session.port)
        writer.write(HOSTILE[name])
        await writer.drain()
        assert await _closed_by_peer(reader), f"seed kept the connection after: {name}"
        writer.close()
        await _still_serves(session.port)
        assert not torrent.peers or all(not p.closed for p in torrent.peers)
    finally:
        await session.close()


async def test_request_flood_is_cut_off() -> None:
    session, torrent = await _seed()
    try:
        reader, writer = await _handshake(session.port)
        writer.write(_msg(0x0F) + _msg(2))
        # Far more requests than the advertised queue (500), without reading any answer.
        flood = b"".join(_msg(6, struct.pack(">III", i % META.info.num_pieces, 0, 16384)) for i in range(5000))
        writer.write(flood)
        assert await _closed_by_peer(reader, timeout=10)
        writer.close()
        await _still_serves(session.port)
    finally:
        await session.close()


async def test_stalled_handshake_times_out() -> None:
    session, _ = await _seed()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", session.port)
        writer.write(b"\x13BitTorrent proto")  # and then nothing
        await writer.drain()
        assert await _closed_by_peer(reader, timeout=5)
        writer.close()
        assert not session._pending
    finally:
        await session.close()


class _CorruptSeed:
    """A peer that claims every piece and answers every request with garbage."""

    def __init__(self) -> None:
        self.blocks_sent = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readexactly(m.HANDSHAKE_LEN)
            writer.write(m.Handshake(META.info_hash, b"-XX0002-" + bytes(12), m.make_reserved(fast=False, extensions=False)).encode())
            writer.write(m.BitfieldMessage(Bitfield.full(META.info.num_pieces)).encode() + m.Unchoke().encode())
            while True:
                (length,) = struct.unpack(">I", await reader.readexactly(4))
                body = await reader.readexactly(length)
                if body[:1] == b"\x06":
                    index, begin, size = struct.unpack(">III", body[1:13])
                    writer.write(m.Piece(index, begin, b"\xaa" * size).encode())
                    self.blocks_sent += 1
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_corrupt_peer_is_banned_and_download_completes() -> None:
    corrupt = _CorruptSeed()
    server = await asyncio.start_server(corrupt.serve, "127.0.0.2", 0)
    corrupt_port = server.sockets[0].getsockname()[1]
    honest, _ = await _seed()
    leech_session = Session(SETTINGS, rng=random.Random(3))
    await leech_session.start()
    try:
        storage = MemoryStorage(META.info)
        leech = await leech_session.add_torrent(META, storage)
        leech.add_peer_addresses([("127.0.0.2", corrupt_port)])
        await asyncio.sleep(0.5)  # let the liar deliver first
        leech.add_peer_addresses([("127.0.0.1", honest.port)])
        await asyncio.wait_for(leech.completed.wait(), 30)
        got = b"".join([await storage.read_block(i, 0, META.info.piece_size(i)) for i in range(META.info.num_pieces)])
        assert got == DATA
        assert corrupt.blocks_sent > 0
        assert "127.0.0.2" in leech.banned
        assert leech.hash_failures >= 1
    finally:
        await leech_session.close()
        await honest.close()
        server.close()
