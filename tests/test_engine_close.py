"""Closing a session closes every connection, even one accepted in the moment it closes.

asyncio sets up an accepted connection one loop turn after the accept; a Server.close() in
that turn leaves the socket open and unowned (CPython gh-109564, gh-155934). A PC's agent
closes its session while peers keep dialling it, so each close lands somewhere in that window.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings

import pytest

from p2pdist.engine.session import Session
from p2pdist.engine.settings import EngineSettings


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the other end closed (EOF or reset) within the socket's timeout."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("turns", range(6))
async def test_a_connection_accepted_while_the_session_closes_is_closed(turns: int) -> None:
    session = Session(EngineSettings(listen_host="127.0.0.1", listen_port=0))
    await session.start()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The kernel completes a loopback connect at once; the loop accepts it on its next turn.
        client = socket.create_connection(("127.0.0.1", session.port), timeout=10)
        try:
            for _ in range(turns):  # close at each point of the accept and its setup
                await asyncio.sleep(0)
            await session.close()
            assert await asyncio.to_thread(closed_by_peer, client)
        finally:
            client.close()
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert session.connection_count() == 0
