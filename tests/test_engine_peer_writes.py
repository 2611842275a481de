"""Writes to a peer whose connection just failed are dropped, not handed to the transport.

When a send fails, asyncio closes the transport at once but tells the protocol one loop turn
later (``connection_lost``). The engine writes in bursts (a cancel per block, a refill), so a
reset peer used to get several writes in that turn, and from the fifth on asyncio logs
"socket.send() raised exception." for each: noise in an agent's log that reads like a fault.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

import pytest

from p2pdist.engine.peer import PeerConnection
from p2pdist.metainfo import Layout
from p2pdist.wire.codec import PeerWire, PieceRun
from tests.support.torrents import make_torrent

_, META = make_torrent({"a.bin": bytes(64 * 1024)}, single=True, name="a.bin", piece_length=64 * 1024)


class Owner:
    """The connection's owner: records why it ended."""

    direct_receive = False

    def __init__(self) -> None:
        self.disconnects: list[str] = []

    def on_event(self, conn: PeerConnection, event: object) -> None:
        pass  # the handshake we never get: the peer resets the connection

    def on_blocks(self, conn: PeerConnection, run: PieceRun) -> None:
        raise AssertionError("no blocks expected")

    def on_requests(self, conn: PeerConnection, run: list[tuple[int, int, int]]) -> None:
        raise AssertionError("no requests expected")

    def on_disconnect(self, conn: PeerConnection, reason: str) -> None:
        self.disconnects.append(reason)


async def test_writes_after_a_failed_send_are_dropped_silently(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[socket.socket] = loop.create_future()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)

    async def accept() -> None:
        sock, _ = await loop.sock_accept(listener)
        accepted.set_result(sock)

    acceptor = asyncio.ensure_future(accept())
    owner = Owner()
    wire = PeerWire(peer_id=b"A" * 20, info_hash=META.info_hash, layout=Layout(META.info), runs=True)
    conn = PeerConnection(wire, owner, outbound=True, address=listener.getsockname())  # type: ignore[arg-type]  # a minimal owner
    try:
        transport, _ = await loop.create_connection(lambda: conn, *listener.getsockname())
        remote = await asyncio.wait_for(accepted, 10)
        transport.pause_reading()  # the reset must surface in a send, not in a read
        remote.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        remote.close()  # RST
        await asyncio.sleep(0.2)  # the RST arrives; nothing reads it
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(10):  # one burst, all in one loop turn: the first send fails
                conn.write(b"\x00\x00\x00\x00")
            async with asyncio.timeout(10):
                while not owner.disconnects:
                    await asyncio.sleep(0.01)
        assert conn.closed and "connection lost" in conn.close_reason
        assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
    finally:
        acceptor.cancel()
        listener.close()
        if conn.transport is not None:
            conn.transport.abort()
