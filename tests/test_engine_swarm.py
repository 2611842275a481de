"""The engine end to end on 127.0.0.1: real sessions, real sockets, memory storage."""

from __future__ import annotations

import asyncio
import random


from p2pdist.engine.session import Session
from p2pdist.engine.settings import EngineSettings
from p2pdist.storage.memory import MemoryStorage
from tests.support.torrents import make_torrent, random_bytes

LOCAL = EngineSettings(listen_host="127.0.0.1", listen_port=0, tick_interval=0.2, choke_interval=1.0)


async def _complete(torrent, timeout: float = 30.0) -> None:
    await asyncio.wait_for(torrent.completed.wait(), timeout)


async def test_one_seed_one_leecher_memory() -> None:
    data = random_bytes(1_000_000, seed=1)
    _, meta = make_torrent({"a.bin": data[:700_000], "dir/b.bin": data[700_000:]}, piece_length=32 * 1024)
    seed_session, leech_session = Session(LOCAL, rng=random.Random(1)), Session(LOCAL, rng=random.Random(2))
    await seed_session.start()
    await leech_session.start()
    try:
        seed = await seed_session.add_torrent(meta, MemoryStorage.from_data(meta.info, data))
        assert seed.completed.is_set()
        storage = MemoryStorage(meta.info)
        leech = await leech_session.add_torrent(meta, storage)
        leech.add_peer_addresses([("127.0.0.1", seed_session.port)])
        await _complete(leech)
        assert storage.have.all()
        got = b"".join([await storage.read_block(i, 0, meta.info.piece_size(i)) for i in range(meta.info.num_pieces)])
        assert got == data
        assert leech.bytes_from_peers == len(data)
        assert seed.upload_meter.total >= len(data)
    finally:
        await leech_session.close()
        await seed_session.close()


async def test_five_leechers_trade_with_each_other() -> None:
    data = random_bytes(1_500_000, seed=2)
    _, meta = make_torrent({"big.bin": data}, single=True, name="big.bin", piece_length=32 * 1024)
    # Six engines share 127.0.0.1: each may hold a connection to all five others.
    settings = EngineSettings(
        listen_host="127.0.0.1", listen_port=0, tick_interval=0.2, choke_interval=1.0, upload_slots=2, max_connections_per_address=8
    )
    seed_session = Session(settings, rng=random.Random(10))
    await seed_session.start()
    sessions = [Session(settings, rng=random.Random(20 + i)) for i in range(5)]
    for session in sessions:
        await session.start()
    try:
        # The seed uploads slowly, so the leechers must trade pieces among themselves.
        seed_session.upload_bucket.rate = 250_000
        seed_session.upload_bucket.burst = 64 * 1024
        await seed_session.add_torrent(meta, MemoryStorage.from_data(meta.info, data))
        leeches = [await s.add_torrent(meta, MemoryStorage(meta.info)) for s in sessions]
        addresses = [("127.0.0.1", seed_session.port)] + [("127.0.0.1", s.port) for s in sessions]
        for session, leech in zip(sessions, leeches):
            leech.add_peer_addresses([a for a in addresses if a[1] != session.port])
        await asyncio.wait_for(asyncio.gather(*(_complete(t, 60) for t in leeches)), 60)
        for leech in leeches:
            assert leech.storage.have.all()
        uploaded_by_leechers = sum(t.upload_meter.total for t in leeches)
        # At 250 kB/s the seed alone would need 30 s to serve 5 x 1.5 MB.
        assert uploaded_by_leechers > len(data), uploaded_by_leechers
    finally:
        for session in sessions:
            await session.close()
        await seed_session.close()


async def test_per_torrent_upload_limit_holds_the_rate_down() -> None:
    data = random_bytes(600_000, seed=3)
    _, meta = make_torrent({"c.bin": data}, single=True, name="c.bin", piece_length=32 * 1024)
    limited = EngineSettings(listen_host="127.0.0.1", listen_port=0, tick_interval=0.2, torrent_upload_rate_limit=200_000)
    seed_session, leech_session = Session(limited, rng=random.Random(5)), Session(LOCAL, rng=random.Random(6))
    await seed_session.start()
    await leech_session.start()
    try:
        await seed_session.add_torrent(meta, MemoryStorage.from_data(meta.info, data))
        leech = await leech_session.add_torrent(meta, MemoryStorage(meta.info))
        started = asyncio.get_running_loop().time()
        leech.add_peer_addresses([("127.0.0.1", seed_session.port)])
        await _complete(leech)
        elapsed = asyncio.get_running_loop().time() - started
        # A 200 kB burst, then 400 kB at 200 kB/s: about 2 s; unlimited it takes ~0.1 s.
        assert elapsed > 1.5, elapsed
    finally:
        await leech_session.close()
        await seed_session.close()


class _BrokenStore(MemoryStorage):
    """Storage whose write path has a bug (not an I/O error) from the fifth piece on."""

    def _store(self, index: int, data: memoryview) -> None:
        if index >= 4:
            raise RuntimeError("bug in the write path")
        super()._store(index, data)


async def test_a_bug_in_the_write_path_stops_that_torrent_with_a_reason_and_nothing_else() -> None:
    data = random_bytes(400_000, seed=3)
    _, meta = make_torrent({"a.bin": data}, single=True, name="a.bin", piece_length=32 * 1024)
    seed_session, leech_session = Session(LOCAL, rng=random.Random(5)), Session(LOCAL, rng=random.Random(6))
    await seed_session.start()
    await leech_session.start()
    try:
        seed = await seed_session.add_torrent(meta, MemoryStorage.from_data(meta.info, data))
        storage = _BrokenStore(meta.info)
        leech = await leech_session.add_torrent(meta, storage)
        leech.add_peer_addresses([("127.0.0.1", seed_session.port)])
        for _ in range(200):
            if leech.state.value == "error":
                break
            await asyncio.sleep(0.05)
        assert leech.state.value == "error" and "piece" in (leech.error or "")
        assert not leech.completed.is_set() and not storage.have.all()
        assert not any(storage.have[i] for i in range(4, meta.info.num_pieces))  # never marked stored
        assert seed.state.value == "seeding"  # the other side goes on
    finally:
        await leech_session.close()
        await seed_session.close()
