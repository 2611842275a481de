"""BEP 19 web seeds against a real aiohttp file server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp
from aiohttp import web

from p2pdist.engine.session import Session
from p2pdist.engine.settings import EngineSettings
from p2pdist.engine.webseed import WebSeed, file_urls
from p2pdist.storage.memory import MemoryStorage
from p2pdist.wire import messages as m
from tests.support.http import serve_app
from tests.support.torrents import make_torrent, random_bytes, write_files

SETTINGS = EngineSettings(listen_host="127.0.0.1", listen_port=0, tick_interval=0.2, choke_interval=0.5)
FILES = {"setup.msi": random_bytes(700_000, seed=11), "sub/data.cab": random_bytes(300_001, seed=12), "empty.txt": b""}
STREAM = b"".join(FILES.values())
REQUESTS = web.AppKey("requests", list)


async def _file_server(root: Path, *, delay: float = 0.0) -> tuple[web.AppRunner, str]:
    """A distribution point: plain static files with range support (aiohttp FileResponse).
    With ``delay``, every answer waits that long, so the fetches of several PCs overlap in
    time as they do over a WAN. ``app[REQUESTS]`` lists the Range header of each request."""
    requests: list[str] = []

    async def serve(request: web.Request) -> web.StreamResponse:
        requests.append(request.headers.get("Range", ""))
        if delay:
            await asyncio.sleep(delay)
        path = (root / request.match_info["path"]).resolve()
        if not path.is_file() or root.resolve() not in path.parents:
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/{path:.+}", serve)
    app[REQUESTS] = requests
    runner, base = await serve_app(app)
    return runner, base + "/"


def _range_bytes(header: str) -> int:
    first, last = header.removeprefix("bytes=").split("-")
    return int(last) - int(first) + 1



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


async def test_pcs_joining_one_by_one_pull_each_piece_about_once(tmp_path: Path) -> None:
    """PCs of a branch start a few tenths of a second apart while the DP is slow: turns alone
    let them pull 1.18-1.24 copies here; with fetch claims each piece crosses about once."""
    files = {"big.bin": random_bytes(2_000_000, seed=14)}
    _, meta = make_torrent(files, name="PS100016", piece_length=32 * 1024)
    write_files(tmp_path / "dp", meta, files)
    runner, base = await _file_server(tmp_path / "dp", delay=0.15)
    sessions = [Session(SETTINGS, rng=random.Random(40 + n)) for n in range(4)]
    for session in sessions:
        await session.start()
    tasks: list[asyncio.Future[None]] = []
    try:
        async with aiohttp.ClientSession() as http:
            torrents = [await s.add_torrent(meta, MemoryStorage(meta.info)) for s in sessions]
            for number, torrent in enumerate(torrents):
                torrent.add_peer_addresses([("127.0.0.1", s.port) for s in sessions[:number]])
                tasks.append(asyncio.ensure_future(WebSeed(torrent, base, http, grace=0.2).run()))
                await asyncio.sleep(0.4)
            # Well inside the 30 s stall rule: PCs that disagree on whose turn a piece is must
            # not wait for each other until then.
            await asyncio.wait_for(asyncio.gather(*(t.completed.wait() for t in torrents)), 20)
            await asyncio.wait_for(asyncio.gather(*tasks), 5)
            copies = sum(t.bytes_from_webseed for t in torrents) / meta.info.total_length
            assert copies <= 1.05, copies
            assert sum(_range_bytes(r) for r in runner.app[REQUESTS]) <= 1.05 * meta.info.total_length
            for torrent in torrents:
                assert bytes(await torrent.storage.read_block(0, 0, 100)) == files["big.bin"][:100]
    finally:
        for task in tasks:
            task.cancel()
        for session in sessions:
            await session.close()
        await runner.cleanup()


async def test_a_claim_holds_until_the_claimer_leaves_and_a_bad_one_ends_only_that_peer(tmp_path: Path) -> None:
    files = {"big.bin": random_bytes(300_000, seed=15)}
    _, meta = make_torrent(files, name="PS100017", piece_length=32 * 1024)
    sessions = [Session(SETTINGS, rng=random.Random(60 + n)) for n in range(2)]
    for session in sessions:
        await session.start()
    try:
        a, b = [await s.add_torrent(meta, MemoryStorage(meta.info)) for s in sessions]
        a.add_peer_addresses([("127.0.0.1", sessions[1].port)])
        for _ in range(100):
            if a.peers and b.peers and all(c.wire.peer_extension_handshake for c in (*a.peers, *b.peers)):
                break
            await asyncio.sleep(0.05)
        a.claim_web_piece(3)
        for _ in range(100):
            if b.claimed_elsewhere(3):
                break
            await asyncio.sleep(0.02)
        assert b.claimed_elsewhere(3) and not b.claimed_elsewhere(4)
        (conn,) = a.peers
        ext_id = conn.wire.peer_extension_handshake.extensions["p2pdist_fetching"]  # type: ignore[union-attr]
        conn.write(conn.wire.send(m.Extended(ext_id, b"\x00\x00")))  # 2 bytes: not a claim
        for _ in range(100):
            if not b.peers:
                break
            await asyncio.sleep(0.02)
        assert not b.peers, "the peer that sent a bad claim is disconnected"
        assert not b.claimed_elsewhere(3), "a claim ends with the claimer's connection"
        assert b.state.value == "downloading" and a.state.value == "downloading"
    finally:
        for session in sessions:
            await session.close()


async def test_the_grace_period_ends_once_the_tracker_answered_and_peers_are_known(tmp_path: Path) -> None:
    """Grace is an upper bound: before the tracker answered, the web seed waits; after it (no
    peer named, none connecting), it starts at once instead of after 30 s."""
    files = {"pkg.msi": random_bytes(200_000, seed=16)}
    _, meta = make_torrent(files, name="PS100018", piece_length=32 * 1024)
    write_files(tmp_path / "dp", meta, files)
    runner, base = await _file_server(tmp_path / "dp")
    session = Session(SETTINGS)
    await session.start()
    task = None
    try:
        async with aiohttp.ClientSession() as http:
            torrent = await session.add_torrent(meta, MemoryStorage(meta.info))
            task = asyncio.ensure_future(WebSeed(torrent, base, http, grace=30.0).run())
            await asyncio.sleep(0.5)
            assert torrent.bytes_from_webseed == 0 and not torrent.peers_settled()
            torrent.tracker_answered = True  # what TrackerClient sets after its first answer
            assert torrent.peers_settled()
            await asyncio.wait_for(torrent.completed.wait(), 5)
            assert torrent.bytes_from_webseed == meta.info.total_length
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await session.close()
        await runner.cleanup()
