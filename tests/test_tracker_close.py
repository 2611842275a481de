"""Stopping the site server closes every connection, even one accepted as it stops.

asyncio sets an accepted connection up one loop turn after the accept; a Server.close() in
that turn leaves the socket open and unowned (CPython gh-109564, gh-155934). Clients announce
"stopped" as they shut down, often just as the server does.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from pathlib import Path

import pytest

from p2pdist.tracker.server import start
from p2pdist.tracker.web import build_app
from tests.support.siteserver import make_settings


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the other end closed (EOF or reset) within the socket's timeout."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("turns", range(6))
async def test_a_connection_accepted_while_the_server_stops_is_closed(tmp_path: Path, turns: int) -> None:
    settings = make_settings(tmp_path)
    server = await start(build_app(settings), settings.listen, "127.0.0.1", 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The kernel completes a loopback connect at once; the loop accepts it on its next turn.
        client = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            for _ in range(turns):  # stop at each point of the accept and its setup
                await asyncio.sleep(0)
            await server.stop()
            assert await asyncio.to_thread(closed_by_peer, client)
        finally:
            client.close()
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
