"""A torrent with nothing to do sleeps: no tick, no choke round, until something gives it work."""

from __future__ import annotations

import asyncio
import random

from p2pdist.engine.session import Session
from p2pdist.engine.settings import EngineSettings
from p2pdist.engine.torrent import Torrent
from p2pdist.storage.memory import MemoryStorage
from tests.support.torrents import make_torrent, random_bytes
from tests.support.trackers import closed_port

FAST = EngineSettings(listen_host="127.0.0.1", listen_port=0, tick_interval=0.02, choke_interval=0.02)


class counting:
    """Count the torrent's tick and choke rounds from now on; compares equal to a dict."""

    def __init__(self, torrent: Torrent) -> None:
        self.torrent = torrent
        self.start = (torrent.ticks, torrent.choking.rounds)

    def __getitem__(self, name: str) -> int:
        return self.as_dict()[name]

    def as_dict(self) -> dict[str, int]:
        return {"tick": self.torrent.ticks - self.start[0], "choke": self.torrent.choking.rounds - self.start[1]}

    def __eq__(self, other: object) -> bool:
        return self.as_dict() == other

    def __repr__(self) -> str:
        return repr(self.as_dict())


async def test_an_idle_seed_runs_no_rounds_even_when_told_of_peers() -> None:
    files = {"a.bin": random_bytes(50_000, seed=61)}
    _, meta = make_torrent(files, name="PS100061")
    session = Session(FAST, rng=random.Random(6))
    await session.start()
    try:
        torrent = await session.add_torrent(meta, MemoryStorage.from_data(meta.info, files["a.bin"]))
        rounds = counting(torrent)
        await asyncio.sleep(0.5)  # 25 tick intervals
        torrent.add_peer_addresses([("127.0.0.1", closed_port())])  # seeds wait to be dialled
        await asyncio.sleep(0.5)
        assert rounds == {"tick": 0, "choke": 0}
    finally:
        await session.close()


async def test_an_idle_download_wakes_for_a_candidate_then_sleeps_through_its_back_off() -> None:
    files = {"a.bin": random_bytes(50_000, seed=62)}
    _, meta = make_torrent(files, name="PS100062")
    session = Session(FAST, rng=random.Random(7))
    await session.start()
    try:
        torrent = await session.add_torrent(meta, MemoryStorage(meta.info))
        rounds = counting(torrent)
        await asyncio.sleep(0.5)  # 25 tick intervals
        assert rounds == {"tick": 0, "choke": 0}
        # A candidate nobody answers: the torrent dials it, then sleeps until it is due again
        # (a back-off of 10 s), not every interval.
        torrent.add_peer_addresses([("127.0.0.1", closed_port())])
        async with asyncio.timeout(30):
            while torrent.dialler.connecting or not torrent.dialler.failures:  # the dial has failed
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        settled = rounds["tick"]
        await asyncio.sleep(0.5)
        assert rounds["tick"] == settled, "ticking while the only candidate waits for its back-off"
        assert rounds["choke"] == 0  # no peer: nothing to choke
        assert torrent.download_meter.rate == 0.0 and torrent.upload_meter.rate == 0.0
    finally:
        await session.close()
