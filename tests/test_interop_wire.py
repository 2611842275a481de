"""p2pdist and libtorrent exchange data over the real wire protocol, both directions."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from p2pdist.engine.session import Session
from p2pdist.engine.settings import EngineSettings
from p2pdist.storage.memory import MemoryStorage
from tests.support import lt as ltsupport
from tests.support.torrents import make_torrent, random_bytes, read_tree, write_files

LOCAL = EngineSettings(listen_host="127.0.0.1", listen_port=0, tick_interval=0.2, choke_interval=1.0)

FILES = {
    "setup.msi": random_bytes(1_500_000, seed=7),
    "data/readme.txt": b"p2pdist interop\n" * 100,
    "data/empty.cfg": b"",
    "data/cab1.cab": random_bytes(333_333, seed=8),
}


async def test_p2pdist_downloads_from_libtorrent_seed(tmp_path: Path) -> None:
    raw, meta = make_torrent(FILES, name="PS100012", piece_length=64 * 1024)
    write_files(tmp_path / "lt", meta, FILES)
    ses = ltsupport.session()
    handle = ltsupport.add(ses, raw, tmp_path / "lt")
    await ltsupport.wait_seeding(handle)
    session = Session(LOCAL, rng=random.Random(3))
    await session.start()
    try:
        storage = MemoryStorage(meta.info)
        torrent = await session.add_torrent(meta, storage)
        torrent.add_peer_addresses([("127.0.0.1", ltsupport.listen_port(ses))])
        await asyncio.wait_for(torrent.completed.wait(), 30)
        stream = b"".join([await storage.read_block(i, 0, meta.info.piece_size(i)) for i in range(meta.info.num_pieces)])
        assert stream == b"".join(FILES.values())
    finally:
        await session.close()


async def test_libtorrent_downloads_from_p2pdist_seed(tmp_path: Path) -> None:
    raw, meta = make_torrent(FILES, name="PS100013", piece_length=32 * 1024)
    stream = b"".join(FILES.values())
    session = Session(LOCAL, rng=random.Random(4))
    await session.start()
    ses = ltsupport.session()
    try:
        await session.add_torrent(meta, MemoryStorage.from_data(meta.info, stream))
        handle = ltsupport.add(ses, raw, tmp_path / "lt")
        handle.connect_peer(("127.0.0.1", session.port))
        await ltsupport.wait_seeding(handle)
        assert read_tree(tmp_path / "lt", meta) == {f"PS100013/{path}": body for path, body in FILES.items()}
    finally:
        await session.close()
