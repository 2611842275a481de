"""Closing a listener in the loop turns around an accept: what the two close tests share.

asyncio sets an accepted connection up one loop turn after the accept, so a close can land
between the two; each test closes its own server at each turn and checks the client is let go.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from collections.abc import Awaitable, Callable


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the other end closed (EOF or reset) within the socket's timeout."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def close_after_connect(port: int, turns: int, close: Callable[[], Awaitable[None]]) -> list[str]:
    """Connect to ``port``, let ``turns`` loop turns pass, ``close`` the server; asserts the
    client was closed by it and returns the resource warnings seen meanwhile (none expected)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The kernel completes a loopback connect at once; the loop accepts it on its next turn.
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            for _ in range(turns):  # close at each point of the accept and its setup
                await asyncio.sleep(0)
            await close()
            assert await asyncio.to_thread(closed_by_peer, client)
        finally:
            client.close()
        gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
