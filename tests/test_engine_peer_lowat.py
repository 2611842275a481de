"""Waking once per block: the driver asks the kernel (SO_RCVLOWAT, Linux) to hold a partial
message until it is complete, and small messages, EOF and slow senders still get through."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from p2pdist.engine.peer import PeerConnection
from p2pdist.metainfo import Layout
from p2pdist.wire import messages as m
from p2pdist.wire.codec import PeerWire, PieceRun
from tests.support.torrents import make_torrent

_, META = make_torrent({"a.bin": bytes(256 * 1024)}, single=True, name="a.bin", piece_length=64 * 1024)
LAYOUT = Layout(META.info)
BLOCK = bytes(range(256)) * 64


class Recorder:
    """The connection's owner: keeps what arrives (a stand-in for the torrent)."""

    def __init__(self) -> None:
        self.blocks: list[tuple[int, int, bytes]] = []
        self.events: list[object] = []
        self.closed: list[str] = []
        self.updates = 0

    def on_blocks(self, conn: PeerConnection, run: PieceRun) -> None:
        self.blocks += [(index, begin, bytes(data)) for index, begin, data in run]

    def on_requests(self, conn: PeerConnection, run: list[tuple[int, int, int]]) -> None:
        self.events += run

    def on_event(self, conn: PeerConnection, event: object) -> None:
        self.events.append(event)

    def on_disconnect(self, conn: PeerConnection, reason: str) -> None:
        self.closed.append(reason)


class CountingConnection(PeerConnection):
    def buffer_updated(self, nbytes: int) -> None:
        self.owner.updates += 1  # type: ignore[attr-defined]
        super().buffer_updated(nbytes)


async def _pair() -> tuple[CountingConnection, Recorder, asyncio.StreamWriter, PeerWire, asyncio.base_events.Server]:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = loop.create_future()
    server = await asyncio.start_server(lambda r, w: accepted.set_result((r, w)), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    owner = Recorder()
    wire = PeerWire(peer_id=b"A" * 20, info_hash=META.info_hash, layout=LAYOUT, runs=True)
    conn = CountingConnection(wire, owner, outbound=True, address=("127.0.0.1", port))  # type: ignore[arg-type]
    await loop.create_connection(lambda: conn, "127.0.0.1", port)
    reader, writer = await accepted
    remote = PeerWire(peer_id=b"B" * 20, info_hash=META.info_hash, layout=LAYOUT)
    remote.receive_data(await reader.readexactly(68))
    remote.next_event()
    writer.write(remote.handshake() + remote.send(m.HaveAll()) + remote.send(m.Unchoke()))
    await writer.drain()
    for _ in range(100):
        if not wire.peer_choking:
            break
        await asyncio.sleep(0.01)
    keys = [(0, 0, 16384), (0, 16384, 16384)]
    conn.write(wire.send_requests(keys))
    remote.receive_data(await reader.readexactly(34))
    while remote.next_event() is not None and remote.requests_in != dict.fromkeys(keys):
        pass
    return conn, owner, writer, remote, server


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux") or not hasattr(socket, "SO_RCVLOWAT"), reason="SO_RCVLOWAT in epoll is Linux's")


def test_bytes_missing_follows_the_partial_message() -> None:
    wire = PeerWire(peer_id=b"A" * 20, info_hash=META.info_hash, layout=LAYOUT)
    peer = PeerWire(peer_id=b"B" * 20, info_hash=META.info_hash, layout=LAYOUT)
    peer.receive_data(wire.handshake())
    wire.receive_data(peer.handshake())
    wire.next_event(), peer.next_event()
    peer.receive_data(wire.send(m.Unchoke()))
    peer.next_event()
    wire.receive_data(peer.send(m.HaveAll()) + peer.send(m.Unchoke()))
    while wire.next_event() is not None and wire.buffered:
        pass
    peer.receive_data(wire.send_requests([(0, 0, 16384)]))
    peer.next_event()
    message = peer.piece_header(0, 0, 16384) + BLOCK
    assert wire.bytes_missing == 0
    wire.receive_data(message[:3])
    assert wire.bytes_missing == 0  # the length prefix is not complete yet
    wire.receive_data(message[3:1000])
    assert wire.bytes_missing == len(message) - 1000
    wire.receive_data(message[1000:])
    assert wire.bytes_missing == 0


@linux_only
async def test_a_block_sent_in_small_pieces_wakes_the_reader_a_few_times_not_per_packet() -> None:
    conn, owner, writer, remote, server = await _pair()
    try:
        message = remote.piece_header(0, 0, 16384) + BLOCK
        writer.write(message[:2048])
        await writer.drain()
        await asyncio.sleep(0.05)
        before = owner.updates
        for start in range(2048, len(message), 1024):  # 15 more packets, 5 ms apart
            writer.write(message[start : start + 1024])
            await writer.drain()
            await asyncio.sleep(0.005)
        for _ in range(200):
            if owner.blocks:
                break
            await asyncio.sleep(0.01)
        assert owner.blocks == [(0, 0, BLOCK)]
        assert owner.updates - before <= 3, owner.updates - before
    finally:
        conn.close("test over")
        writer.close()
        server.close()


@linux_only
async def test_small_messages_after_a_stalled_block_and_eof_still_get_through() -> None:
    conn, owner, writer, remote, server = await _pair()
    try:
        first = remote.piece_header(0, 0, 16384) + BLOCK
        writer.write(first[:5000])
        await writer.drain()
        await asyncio.sleep(0.2)  # the sender stalls mid-block
        assert owner.blocks == []
        writer.write(first[5000:] + m.Have(2).encode())
        await writer.drain()
        for _ in range(200):
            if m.Have(2) in owner.events:
                break
            await asyncio.sleep(0.01)
        assert owner.blocks == [(0, 0, BLOCK)] and m.Have(2) in owner.events
        second = remote.piece_header(0, 16384, 16384) + BLOCK
        writer.write(second[:6000])  # half a block, then the peer goes away
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()
        for _ in range(200):
            if owner.closed:
                break
            await asyncio.sleep(0.01)
        assert owner.closed, "EOF wakes the reader even below the low-water mark"
    finally:
        conn.close("test over")
        server.close()
