"""A torrent with nothing to do sleeps: no tick, no choke round, until something gives it work.

Over a virtual clock and in-memory streams (tests/support/virtual.py): hours pass in
milliseconds and the rounds counted are exact, whatever the machine's load."""

from __future__ import annotations

import asyncio
import random

from p2pdist.engine.session import Session
from p2pdist.engine.settings import EngineSettings
from p2pdist.engine.torrent import TorrentState
from tests.support.torrents import make_torrent, random_bytes
from tests.support.virtual import MemoryNet, VirtualLoop, inline_storage, run_virtual

SETTINGS = EngineSettings(listen_host="127.0.0.1", listen_port=0)
NOBODY = ("127.0.0.9", 6881)  # nobody listens there in the MemoryNet


def test_an_idle_seed_runs_no_rounds_even_when_told_of_peers() -> None:
    files = {"a.bin": random_bytes(50_000, seed=61)}
    _, meta = make_torrent(files, name="PS100061")

    async def main(loop: VirtualLoop) -> None:
        net = MemoryNet()
        session = Session(SETTINGS, rng=random.Random(6), clock=loop.time, connect=net.connect)
        torrent = await session.add_torrent(meta, inline_storage(meta.info, files["a.bin"]))
        assert torrent.state is TorrentState.SEEDING
        await asyncio.sleep(3600)
        torrent.add_peer_addresses([NOBODY])  # seeds wait to be dialled
        await asyncio.sleep(3600)
        assert (torrent.ticks, torrent.choking.rounds, net.dials) == (0, 0, [])
        assert not torrent.busy
        await session.close()

    run_virtual(main)


def test_an_idle_download_wakes_for_a_candidate_then_sleeps_through_its_back_off() -> None:
    files = {"a.bin": random_bytes(50_000, seed=62)}
    _, meta = make_torrent(files, name="PS100062")

    async def main(loop: VirtualLoop) -> None:
        net = MemoryNet()
        session = Session(SETTINGS, rng=random.Random(7), clock=loop.time, connect=net.connect)
        torrent = await session.add_torrent(meta, inline_storage(meta.info))
        await asyncio.sleep(3600)
        assert (torrent.ticks, torrent.choking.rounds) == (0, 0)
        # A candidate nobody answers: the torrent dials it, then sleeps until it is due again
        # (a back-off of 10 s), not every interval.
        torrent.add_peer_addresses([NOBODY])
        await asyncio.sleep(5)
        assert len(net.dials) == 1 and torrent.dialler.failures == {NOBODY: 1}
        settled = torrent.ticks
        assert 0 < settled <= 2
        await asyncio.sleep(4)  # still inside the back-off
        assert torrent.ticks == settled, "ticking while the only candidate waits for its back-off"
        assert not torrent.busy
        assert torrent.choking.rounds == 0  # no peer: nothing to choke
        assert torrent.download_meter.rate == 0.0 and torrent.upload_meter.rate == 0.0
        await asyncio.sleep(5)  # due again: dialled again
        assert len(net.dials) == 2
        await session.close()

    run_virtual(main)
