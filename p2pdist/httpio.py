"""Reading HTTP bodies whole, with a size cap, on both ends of aiohttp.

``StreamReader.read(n)`` returns what has arrived so far, up to n bytes, not n bytes: on a
loopback it is usually everything, over a 20 Mbit/s WAN link it is part of a torrent or of a
web-seed range. Every body p2pdist reads goes through ``read_capped``.
"""

from __future__ import annotations

from typing import Protocol

CHUNK = 64 * 1024


class _Readable(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


async def read_capped(stream: _Readable, limit: int) -> bytes | None:
    """The whole body until its end, or None as soon as it is longer than ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(min(CHUNK, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
