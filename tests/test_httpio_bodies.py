"""Bodies read whole over a slow link (the WAN case), with the size cap enforced."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from tests.support.http import serve_app

from p2pdist.httpio import read_capped

CHUNKS = [bytes([n]) * 1000 for n in range(10)]


async def _slow_server() -> tuple[web.AppRunner, str]:
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = sum(map(len, CHUNKS))
        await response.prepare(request)
        for chunk in CHUNKS:
            await response.write(chunk)
            await asyncio.sleep(0.02)
        return response

    app = web.Application()
    app.router.add_get("/slow", trickle)
    runner, base = await serve_app(app)
    return runner, f"{base}/slow"


async def test_read_capped_waits_for_the_whole_body() -> None:
    runner, url = await _slow_server()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as reply:
                first = await reply.content.read(20_000)  # what a single read gives: part of it
                rest = await read_capped(reply.content, 20_000)
            assert len(first) < 10_000
            assert first + (rest or b"") == b"".join(CHUNKS)
            async with http.get(url) as reply:
                assert await read_capped(reply.content, 10_000) == b"".join(CHUNKS)
            async with http.get(url) as reply:
                assert await read_capped(reply.content, 9_999) is None
    finally:
        await runner.cleanup()
