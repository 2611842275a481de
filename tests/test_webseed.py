"""BEP 19 web seeds against a real aiohttp file server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from p2pdist.agent.session import Session
from p2pdist.agent.settings import EngineSettings
from p2pdist.agent.webseed import WebSeed, file_urls
from p2pdist.storage.memory import MemoryStorage
from tests.support.torrents import make_torrent, random_bytes, write_files

SETTINGS = EngineSettings(listen_host="127.0.0.1", listen_port=0, tick_interval=0.2, choke_interval=0.5)
FILES = {"setup.msi": random_bytes(700_000, seed=11), "sub/data.cab": random_bytes(300_001, seed=12), "empty.txt": b""}
STREAM = b"".join(FILES.values())
REQUESTS = web.AppKey("requests", list)


async def _file_server(root: Path) -> tuple[web.AppRunner, str]:
    """A distribution point: plain static files with range support (aiohttp FileResponse)."""
    requests: list[str] = []

    async def serve(request: web.Request) -> web.StreamResponse:
        requests.append(request.headers.get("Range", ""))
        path = (root / request.match_info["path"]).resolve()
        if not path.is_file() or root.resolve() not in path.parents:
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/{path:.+}", serve)
    app[REQUESTS] = requests
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/"



async def _read_all(storage, meta) -> bytes:
    return b"".join([await storage.read_block(i, 0, meta.info.piece_size(i)) for i in range(meta.info.num_pieces)])


def test_file_urls_follow_bep19() -> None:
    _, multi = make_torrent(FILES, name="PS1 00012")
    assert file_urls(multi, "http://dp/SMSPKG/")[0] == "http://dp/SMSPKG/PS1%2000012/setup.msi"
    assert file_urls(multi, "http://dp/SMSPKG")[1] == "http://dp/SMSPKG/PS1%2000012/sub/data.cab"
    _, single = make_torrent({"x.msi": b"a" * 100}, single=True, name="x.msi")
    assert file_urls(single, "http://dp/pkg/") == ["http://dp/pkg/x.msi"]
    assert file_urls(single, "http://dp/pkg/x.msi") == ["http://dp/pkg/x.msi"]


async def test_download_from_web_seed_alone(tmp_path: Path) -> None:
    _, meta = make_torrent(FILES, name="PS100012", piece_length=32 * 1024)
    write_files(tmp_path / "dp", meta, FILES)
    runner, base = await _file_server(tmp_path / "dp")
    session = Session(SETTINGS, rng=random.Random(1))
    await session.start()
    try:
        async with aiohttp.ClientSession() as http:
            storage = MemoryStorage(meta.info)
            torrent = await session.add_torrent(meta, storage)
            seed = WebSeed(torrent, base, http, grace=0.0)
            task = asyncio.ensure_future(seed.run())
            await asyncio.wait_for(torrent.completed.wait(), 30)
            await asyncio.wait_for(task, 5)
            assert await _read_all(storage, meta) == STREAM
            assert torrent.bytes_from_webseed == meta.info.total_length
            assert torrent.bytes_from_peers == 0
            assert all(r.startswith("bytes=") for r in runner.app[REQUESTS])
    finally:
        await session.close()
        await runner.cleanup()


async def test_web_seed_leaves_pieces_to_peers(tmp_path: Path) -> None:
    """With a peer that has everything, the web seed fetches nothing: the WAN stays quiet."""
    _, meta = make_torrent(FILES, name="PS100013", piece_length=32 * 1024)
    write_files(tmp_path / "dp", meta, FILES)
    runner, base = await _file_server(tmp_path / "dp")
    seed_session, leech_session = Session(SETTINGS, rng=random.Random(2)), Session(SETTINGS, rng=random.Random(3))
    await seed_session.start()
    await leech_session.start()
    try:
        await seed_session.add_torrent(meta, MemoryStorage.from_data(meta.info, STREAM))
        async with aiohttp.ClientSession() as http:
            torrent = await leech_session.add_torrent(meta, MemoryStorage(meta.info))
            torrent.add_peer_addresses([("127.0.0.1", seed_session.port)])
            web_seed = WebSeed(torrent, base, http, grace=1.0)
            task = asyncio.ensure_future(web_seed.run())
            await asyncio.wait_for(torrent.completed.wait(), 30)
            await asyncio.wait_for(task, 5)
            assert torrent.bytes_from_webseed == 0
            assert torrent.bytes_from_peers == meta.info.total_length
    finally:
        await leech_session.close()
        await seed_session.close()
        await runner.cleanup()


async def test_modified_file_on_distribution_point_is_never_accepted(tmp_path: Path) -> None:
    _, meta = make_torrent(FILES, name="PS100014", piece_length=32 * 1024)
    tampered = dict(FILES)
    tampered["setup.msi"] = FILES["setup.msi"][:1000] + b"EVIL" + FILES["setup.msi"][1004:]
    write_files(tmp_path / "dp", meta, tampered)
    runner, base = await _file_server(tmp_path / "dp")
    session = Session(SETTINGS, rng=random.Random(4))
    seed_session = Session(SETTINGS, rng=random.Random(5))
    await session.start()
    await seed_session.start()
    try:
        async with aiohttp.ClientSession() as http:
            storage = MemoryStorage(meta.info)
            torrent = await session.add_torrent(meta, storage)
            web_seed = WebSeed(torrent, base, http, grace=0.0)
            task = asyncio.ensure_future(web_seed.run())
            await asyncio.sleep(2.0)
            assert not storage.have[0], "a piece from a modified file was accepted"
            assert torrent.hash_failures >= 1
            # An honest peer supplies the piece the distribution point cannot.
            await seed_session.add_torrent(meta, MemoryStorage.from_data(meta.info, STREAM))
            torrent.add_peer_addresses([("127.0.0.1", seed_session.port)])
            await asyncio.wait_for(torrent.completed.wait(), 30)
            assert await _read_all(storage, meta) == STREAM
            task.cancel()
    finally:
        await session.close()
        await seed_session.close()
        await runner.cleanup()


async def test_two_pcs_split_the_web_seed_work(tmp_path: Path) -> None:
    """Two PCs of a branch start together: they take turns instead of both pulling everything."""
    files = {"big.bin": random_bytes(2_000_000, seed=13)}
    _, meta = make_torrent(files, name="PS100015", piece_length=32 * 1024)
    write_files(tmp_path / "dp", meta, files)
    runner, base = await _file_server(tmp_path / "dp")
    sessions = [Session(SETTINGS, rng=random.Random(20 + n)) for n in range(2)]
    for session in sessions:
        await session.start()
    try:
        async with aiohttp.ClientSession() as http:
            torrents = [await s.add_torrent(meta, MemoryStorage(meta.info)) for s in sessions]
            torrents[0].add_peer_addresses([("127.0.0.1", sessions[1].port)])
            await asyncio.sleep(0.5)  # connected before the grace period ends
            seeds = [WebSeed(t, base, http, grace=1.0) for t in torrents]
            tasks = [asyncio.ensure_future(s.run()) for s in seeds]
            await asyncio.wait_for(asyncio.gather(*(t.completed.wait() for t in torrents)), 30)
            await asyncio.wait_for(asyncio.gather(*tasks), 5)
            pulled = sum(t.bytes_from_webseed for t in torrents)
            assert pulled <= 1.25 * meta.info.total_length, pulled / meta.info.total_length
            assert all(t.bytes_from_webseed > 0 for t in torrents)  # both took their turn
    finally:
        for session in sessions:
            await session.close()
        await runner.cleanup()
