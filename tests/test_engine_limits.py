"""What one hostile host can make a real session hold, over real sockets on 127.0.0.0/8.

Each test plays an attacker by hand (raw asyncio streams, the wire messages' encoders) against a
session in this process, and checks the bound on the session's side, one section per limit.
Bounds are generous ceilings, never timings.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct

import pytest

from p2pdist.engine.peer import PeerConnection
from p2pdist.engine.session import Session
from p2pdist.engine.settings import EngineSettings
from p2pdist.storage.memory import MemoryStorage
from p2pdist.wire import messages as m
from tests.support.torrents import make_torrent, random_bytes

SETTINGS = EngineSettings(listen_host="127.0.0.1", listen_port=0, tick_interval=0.1, choke_interval=30.0, handshake_timeout=30.0)
DATA = random_bytes(2 << 20, seed=15)
RAW, META = make_torrent({"big.bin": DATA}, single=True, name="big.bin", piece_length=64 * 1024)
SMALL = random_bytes(200_000, seed=16)
_, SMALL_META = make_torrent({"small.bin": SMALL}, single=True, name="small.bin", piece_length=32 * 1024)
PEER_ID = b"-XX0001-" + bytes(12)


def _msg(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", 1 + len(payload), kind) + payload


def _request(index: int, begin: int, length: int = 16384) -> bytes:
    return _msg(6, struct.pack(">III", index, begin, length))


def _cancel(index: int, begin: int, length: int = 16384) -> bytes:
    return _msg(8, struct.pack(">III", index, begin, length))


async def _session(settings: EngineSettings = SETTINGS, storage: MemoryStorage | None = None, meta=META) -> tuple[Session, object]:
    session = Session(settings, rng=random.Random(1))
    await session.start()
    torrent = await session.add_torrent(meta, storage or MemoryStorage.from_data(meta.info, DATA))
    return session, torrent


async def _open(port: int, *, host: str = "127.0.0.1", source: str = "127.0.0.1", rcvbuf: int | None = None):
    """A raw connection from ``source``; a small ``rcvbuf`` makes a peer that does not read
    fill our send path quickly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        sock.bind((source, 0))
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except OSError:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def _read_until(reader: asyncio.StreamReader, kind: int) -> None:
    """Read messages until one of type ``kind`` (after the handshake)."""
    async with asyncio.timeout(10):
        while True:
            (length,) = struct.unpack(">I", await reader.readexactly(4))
            body = await reader.readexactly(length)
            if body[:1] == bytes((kind,)):
                return


async def _unchoked(port: int, *, meta=META, **options: object):
    """Handshake, have_none, interested; returns once the seed unchoked us."""
    reader, writer = await _open(port, **options)  # type: ignore[arg-type]
    writer.write(m.Handshake(meta.info_hash, PEER_ID, m.make_reserved(fast=True)).encode() + _msg(0x0F) + _msg(2))
    await reader.readexactly(m.HANDSHAKE_LEN)
    await _read_until(reader, 1)
    return reader, writer


def _server_side(torrent) -> PeerConnection:
    (conn,) = [c for c in torrent.peers if not c.closed]
    return conn


def _shrink_send_buffer(conn: PeerConnection) -> None:
    """The seed's kernel send buffer, small: its own queue fills as soon as the peer stops reading."""
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)


async def _reset_or_eof(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _download(port: int, meta=META, data: bytes = DATA, source: str = "127.0.0.1") -> None:
    """A well-behaved leecher still gets everything from the attacked session."""
    session = Session(EngineSettings(listen_host=source, bind_host=source, listen_port=0, tick_interval=0.1), rng=random.Random(2))
    await session.start()
    try:
        storage = MemoryStorage(meta.info)
        torrent = await session.add_torrent(meta, storage)
        torrent.add_peer_addresses([("127.0.0.1", port)])
        async with asyncio.timeout(30):
            await torrent.completed.wait()
        got = b"".join([await storage.read_block(i, 0, meta.info.piece_size(i)) for i in range(meta.info.num_pieces)])
        assert got == data
    finally:
        await session.close()


# -- 1. memory: requests, queued uploads, the send buffer ---------------------------------------


async def test_repeating_one_request_ends_the_peer() -> None:
    session, torrent = await _session()
    try:
        reader, writer = await _unchoked(session.port, rcvbuf=4096)
        writer.write(_request(0, 0) * 20_000)  # one block, asked for again and again, never read
        await writer.drain()
        async with asyncio.timeout(10):
            while torrent.peers:
                await asyncio.sleep(0.02)
        writer.close()
        await _download(session.port)
    finally:
        await session.close()


async def test_request_cancel_churn_keeps_the_upload_queue_bounded() -> None:
    """Request, cancel, request again, while not reading: each cycle left an entry in the upload
    queue behind an upload that waits for the socket; the queue stays within its bound."""
    session, torrent = await _session()
    try:
        reader, writer = await _unchoked(session.port, rcvbuf=4096)
        conn = _server_side(torrent)
        _shrink_send_buffer(conn)
        # Every block once: more than the kernel buffers hold, so the upload loop waits on drain.
        writer.write(b"".join(_request(i, b) for i in range(META.info.num_pieces) for b in (0, 16384, 32768, 49152)))
        await writer.drain()
        async with asyncio.timeout(10):
            while not conn.transport.get_write_buffer_size():
                await asyncio.sleep(0.02)
        longest = 0
        for _ in range(30):
            writer.write((_request(0, 0) + _cancel(0, 0)) * 1000)  # block 0 went out in the first batch
            await writer.drain()
            await asyncio.sleep(0.01)
            longest = max(longest, len(conn.upload_queue))
        assert not conn.closed
        assert longest <= 3 * conn.wire.limits.max_incoming_requests, longest
        writer.close()
    finally:
        await session.close()


async def test_peer_that_does_not_read_is_closed_at_the_send_buffer_cap() -> None:
    """Requests for a piece we lack are each answered with a reject: a peer asking without
    reading made us buffer every reject; it is closed once the send buffer passes its cap."""
    storage = MemoryStorage.from_data(META.info, DATA)
    last = META.info.num_pieces - 1
    storage.have.clear(last)
    storage._pieces.pop(last)
    session, torrent = await _session(storage=storage)
    try:
        reader, writer = await _unchoked(session.port, rcvbuf=4096)
        conn = _server_side(torrent)
        _shrink_send_buffer(conn)
        # Distinct requests in runs of 400 (a keep-alive ends a run): within every request cap.
        chunk = b"".join(b"".join(_request(last, begin) for begin in range(400)) + struct.pack(">I", 0) for _ in range(25))
        for _ in range(60):  # 10 MiB of requests, 10 MiB of rejects owed: ten times the cap
            if conn.closed:
                break
            writer.write(chunk)
            try:
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0.01)
        async with asyncio.timeout(10):
            while not conn.closed:
                await asyncio.sleep(0.02)
        assert "does not read" in conn.close_reason, conn.close_reason
        writer.close()
        _, again = await _unchoked(session.port)  # the session itself serves on
        again.close()
    finally:
        await session.close()


# -- 2. connections: refused at accept ----------------------------------------------------------


async def test_connections_over_the_cap_are_refused_at_once() -> None:
    settings = EngineSettings(listen_host="127.0.0.1", listen_port=0, max_connections=20)
    session, _ = await _session(settings)
    try:
        before = _open_fds()
        streams = [await _open(session.port, source=f"127.0.2.{n}") for n in range(1, 201)]  # one each
        results = await asyncio.gather(*(_reset_or_eof(reader, timeout=3.0) for reader, _ in streams))
        assert sum(results) >= 180  # every connection past the 20th, at once
        assert session.connection_count() <= 20
        for (_, writer), refused in zip(streams, results):
            if refused:
                writer.close()
        await asyncio.sleep(0.2)
        # Ours (20 left open) and the session's (20 held): nothing of the 180 refused lingers.
        assert _open_fds() - before <= 2 * 20 + 10
        for _, writer in streams:
            writer.close()
    finally:
        await session.close()


# -- 3. slots per address -------------------------------------------------------------------------


async def test_one_address_cannot_take_every_slot() -> None:
    session, torrent = await _session()  # the default: four per address
    try:
        # Handshakes pending from one address: four at most.
        idle = [await _open(session.port, source="127.0.0.3") for _ in range(10)]
        refused = await asyncio.gather(*(_reset_or_eof(reader, timeout=3.0) for reader, _ in idle))
        assert sum(refused) == 6
        for _, writer in idle:
            writer.close()
        # Peers of the torrent from one address: four at most.
        streams = []
        for n in range(10):
            reader, writer = await _open(session.port, source="127.0.0.2")
            writer.write(m.Handshake(META.info_hash, b"-XX0001-" + bytes([n]) * 12, m.make_reserved()).encode())
            streams.append((reader, writer))
        refused = await asyncio.gather(*(_reset_or_eof(reader, timeout=3.0) for reader, _ in streams))
        assert sum(refused) == 6  # at accept or at the handshake; the other four are peers now
        from_one = [c for c in torrent.peers if c.address[0] == "127.0.0.2" and not c.closed]
        assert len(from_one) == 4
        await _download(session.port, source="127.0.0.1")  # another address still gets a slot
        for _, writer in streams:
            writer.close()
    finally:
        await session.close()


# -- 4. trust per address ---------------------------------------------------------------------------


async def _poison_once(port: int, failures_before: int, torrent) -> bool:
    """Dial in from 127.0.0.2 as a seed, answer one piece's requests with garbage, hang up once
    the piece failed. False when the session refused the connection."""
    try:
        reader, writer = await _open(port, source="127.0.0.2")
    except ConnectionError:
        return False
    try:
        writer.write(m.Handshake(SMALL_META.info_hash, b"-XX0002-" + bytes(12), m.make_reserved(fast=True)).encode())
        await reader.readexactly(m.HANDSHAKE_LEN)
    except (ConnectionError, asyncio.IncompleteReadError):
        writer.close()  # refused at accept: our end still holds its socket
        return False
    try:
        writer.write(_msg(0x0E) + _msg(1))  # have_all, unchoke
        piece = None
        async with asyncio.timeout(10):
            while torrent.hash_failures == failures_before:
                try:
                    async with asyncio.timeout(0.1):  # then look at the failure count again
                        header = await reader.readexactly(4)  # cancel-safe: nothing consumed
                except TimeoutError:
                    continue
                body = await reader.readexactly(struct.unpack(">I", header)[0])
                if body[:1] == b"\x06":
                    index, begin, size = struct.unpack(">III", body[1:13])
                    piece = index if piece is None else piece
                    if index == piece:
                        writer.write(m.Piece(index, begin, b"\xaa" * size).encode())
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    writer.close()
    return True


async def test_reconnecting_poisoner_is_banned_by_address() -> None:
    leech_session = Session(SETTINGS, rng=random.Random(3))
    await leech_session.start()
    try:
        leech = await leech_session.add_torrent(SMALL_META, MemoryStorage(SMALL_META.info))
        connections = 0
        for _ in range(12):
            if not await _poison_once(leech_session.port, leech.hash_failures, leech):
                break
            connections += 1
        assert "127.0.0.2" in leech.banned
        assert leech.hash_failures == SETTINGS.ban_after_failures == connections
        # Still refused, for any torrent of the session, and it dials nothing there.
        assert not await _poison_once(leech_session.port, leech.hash_failures, leech)
    finally:
        await leech_session.close()


# -- 5. dial targets ------------------------------------------------------------------------------------


class _Listener:
    """Counts connections to one address (the dial target under test)."""

    def __init__(self) -> None:
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()


async def _dialled(settings: EngineSettings, host: str, *, min_port_above: bool = False, site: list[str] | None = None) -> int:
    listener = _Listener()
    server = await asyncio.start_server(listener.serve, host, 0)
    port = server.sockets[0].getsockname()[1]
    if min_port_above:
        settings = EngineSettings(**{**settings.__dict__, "min_peer_port": port + 1})
    session = Session(settings, rng=random.Random(4))
    await session.start()
    try:
        if site is not None:
            session.set_site_networks(site)
        torrent = await session.add_torrent(META, MemoryStorage(META.info))
        torrent.add_peer_addresses([(host, port)])
        await asyncio.sleep(0.5)
        return listener.connections
    finally:
        await session.close()
        server.close()


async def test_never_dials_ports_below_the_minimum() -> None:
    assert await _dialled(SETTINGS, "127.0.0.1") == 1
    assert await _dialled(SETTINGS, "127.0.0.1", min_port_above=True) == 0
    from p2pdist.engine.targets import DialPolicy

    assert DialPolicy().refusal(("10.0.0.5", 22)) is not None  # the default: nothing below 1024
    site = DialPolicy(site_networks=["10.1.0.0/16"])
    assert site.refusal(("::ffff:10.1.2.3", 6881)) is None  # an IPv4-mapped peer is that IPv4 peer
    assert site.refusal(("10.2.0.1", 6881)) is not None
    assert site.refusal(("pc-17.branch.example", 6881)) is not None  # cannot be checked unresolved
    assert DialPolicy().refusal(("pc-17.branch.example", 6881)) is None


async def test_dials_only_inside_the_allowed_networks() -> None:
    narrow = EngineSettings(**{**SETTINGS.__dict__, "peer_networks": ("127.0.0.2/32",)})
    assert await _dialled(narrow, "127.0.0.1") == 0
    assert await _dialled(narrow, "127.0.0.2") == 1
    assert await _dialled(SETTINGS, "127.0.0.2", site=["127.0.1.0/24"]) == 0  # the site's subnets
    assert await _dialled(SETTINGS, "127.0.1.7", site=["127.0.1.0/24"]) == 1


def test_peer_limits_are_checked_when_settings_are_made() -> None:
    with pytest.raises(ValueError, match="peer_networks"):
        EngineSettings(peer_networks=("10.1.0.0/16", "branch-1"))
    with pytest.raises(ValueError, match="max_connections_per_address"):
        EngineSettings(max_connections_per_address=0)
    assert EngineSettings(peer_networks=("10.1.0.0/16",), min_peer_port=0).min_peer_port == 0
