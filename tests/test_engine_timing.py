"""Engine timing over a virtual clock and in-memory streams: dialling back-off, the choke
round's period and snubbing a slow seed (idle parking: test_engine_idle.py). The socket is not the subject here, so no
socket is opened and no test waits on the wall clock: the times asserted are the engine's own,
exactly."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random

import pytest

from p2pdist.engine.choking import Choking
from p2pdist.engine.dialling import MAX_BACKOFF, backoff
from p2pdist.engine.session import Session
from p2pdist.engine.settings import EngineSettings
from tests.support.torrents import make_torrent, random_bytes
from tests.support.virtual import MemoryNet, VirtualLoop, inline_storage, run_virtual

SETTINGS = EngineSettings(listen_host="127.0.0.1", listen_port=0)  # the defaults' timing: 1 s tick, 10 s choke
SEED = ("127.0.0.9", 6881)


def _session(loop: VirtualLoop, net: MemoryNet, seed: int) -> Session:
    return Session(SETTINGS, rng=random.Random(seed), clock=loop.time, connect=net.connect)


def test_backoff_doubles_from_ten_seconds_to_five_minutes() -> None:
    assert [backoff(n) for n in range(1, 8)] == [10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
    assert MAX_BACKOFF == 300.0


def test_a_refused_candidate_is_dialled_again_after_each_backoff_and_the_torrent_sleeps_between() -> None:
    files = {"a.bin": random_bytes(50_000, seed=71)}
    _, meta = make_torrent(files, name="PS100071")

    async def main(loop: VirtualLoop) -> None:
        net = MemoryNet()  # nobody listens: every dial is refused
        session = _session(loop, net, 1)
        torrent = await session.add_torrent(meta, inline_storage(meta.info))
        start = loop.time()
        torrent.add_peer_addresses([SEED])
        async with asyncio.timeout(1200):  # virtual seconds
            while len(net.dials) < 7:
                await asyncio.sleep(1)
        times = [when - start for when, _ in net.dials]
        # The first dial at once; each next one when its back-off ends, at the first tick after
        # the torrent wakes (one tick interval later).
        expected = [0.0]
        for failures in range(1, 7):
            expected.append(expected[-1] + backoff(failures) + SETTINGS.tick_interval)
        assert times == expected
        # Between dials the torrent sleeps: over ten virtual minutes, two ticks per dial (the one
        # that dials and the one that finds it failed) and one after the first, not one a second.
        assert torrent.ticks == 2 * 6 + 1
        assert torrent.dialler.failures[SEED] == 7
        await session.close()

    run_virtual(main)


def test_choke_rounds_come_every_interval_while_peers_are_there_and_stop_with_them(monkeypatch: pytest.MonkeyPatch) -> None:
    data = random_bytes(8 * 32 * 1024 + 1000, seed=73)
    _, meta = make_torrent({"a.bin": data}, name="PS100073")

    async def main(loop: VirtualLoop) -> None:
        net = MemoryNet()
        seeder = _session(loop, net, 3)
        # A download limit keeps the peer connected for about a minute of virtual time.
        slow = dataclasses.replace(SETTINGS, download_rate_limit=4096)
        leecher = Session(slow, rng=random.Random(4), clock=loop.time, connect=net.connect)
        net.listen(SEED, seeder.inbound)
        seed = await seeder.add_torrent(meta, inline_storage(meta.info, data))
        leech = await leecher.add_torrent(meta, inline_storage(meta.info))
        rounds: list[float] = []
        round_ = Choking.round

        def timed_round(choking: Choking) -> None:
            if choking is seed.choking:
                rounds.append(loop.time())
            round_(choking)

        monkeypatch.setattr(Choking, "round", timed_round)  # observe, then do the real round
        leech.add_peer_addresses([SEED])
        async with asyncio.timeout(600):  # virtual seconds
            await leech.completed.wait()
        got = b"".join([await leech.storage.read_block(i, 0, meta.info.piece_size(i)) for i in range(meta.info.num_pieces)])
        assert got == data
        connected_for = loop.time() - rounds[0]
        assert connected_for >= 40, connected_for  # the limit held: about 48 s after the burst
        # The leecher is a seed now: both close ("both are seeds"), the seed's loop ends.
        await asyncio.sleep(120)
        assert not seed.peers and not seed.choking.running
        assert len(rounds) >= 4, rounds
        gaps = [b - a for a, b in zip(rounds, rounds[1:])]
        assert all(gap == SETTINGS.choke_interval for gap in gaps), gaps
        assert rounds[-1] <= loop.time() - 100  # none since the peer left
        await leecher.close()
        await seeder.close()

    run_virtual(main)


def _lone_slow_seed(loop: VirtualLoop, leecher_settings: EngineSettings, seed: int) -> tuple[Session, Session]:
    """A seed limited to 20 kB/s and a leecher with ``leecher_settings``, on one memory net."""
    net = MemoryNet()
    seeder = Session(dataclasses.replace(SETTINGS, upload_rate_limit=20_000), rng=random.Random(seed), clock=loop.time, connect=net.connect)
    leecher = Session(leecher_settings, rng=random.Random(seed + 1), clock=loop.time, connect=net.connect)
    net.listen(SEED, seeder.inbound)
    return seeder, leecher


async def _download_from_lone_seed(seeder: Session, leecher: Session, data: bytes, name: str) -> bytes:
    _, meta = make_torrent({"a.bin": data}, name=name, piece_length=64 * 1024)
    await seeder.add_torrent(meta, inline_storage(meta.info, data))
    leech = await leecher.add_torrent(meta, inline_storage(meta.info))
    leech.add_peer_addresses([SEED])
    try:
        async with asyncio.timeout(600):  # virtual seconds: about 70 at 20 kB/s
            await leech.completed.wait()
        return b"".join([await leech.storage.read_block(i, 0, meta.info.piece_size(i)) for i in range(meta.info.num_pieces)])
    finally:
        await leecher.close()
        await seeder.close()


def test_a_rate_limited_seed_sends_a_little_every_second_and_is_never_taken_for_stalled(caplog: pytest.LogCaptureFixture) -> None:
    """A whole 512 KiB batch at 20 kB/s would leave 26 s between writes, past the 20 s request
    timeout: the leecher would snub an honest seed. Under a limit a write holds about a second
    of it."""
    data = random_bytes(20 * 64 * 1024 + 20_000, seed=76)

    async def main(loop: VirtualLoop) -> None:
        seeder, leecher = _lone_slow_seed(loop, SETTINGS, 7)
        assert await _download_from_lone_seed(seeder, leecher, data, "PS100076") == data

    with caplog.at_level(logging.INFO, logger="p2pdist.torrent"):
        run_virtual(main)
    assert not [r for r in caplog.records if "snubbed us" in r.getMessage()]


def test_a_snubbed_lone_seed_is_asked_again_and_the_download_completes(caplog: pytest.LogCaptureFixture) -> None:
    """A leecher whose request timeout (0.5 s) is shorter than the seed's pace (a 16 KiB block
    every 0.8 s at 20 kB/s) snubs its only peer and cancels its requests. With nobody else to
    take them, the download used to stop there for good: a snubbed peer was not asked again."""
    data = random_bytes(20 * 64 * 1024 + 20_000, seed=75)

    async def main(loop: VirtualLoop) -> None:
        seeder, leecher = _lone_slow_seed(loop, dataclasses.replace(SETTINGS, request_timeout=0.5), 5)
        assert await _download_from_lone_seed(seeder, leecher, data, "PS100075") == data

    with caplog.at_level(logging.INFO, logger="p2pdist.torrent"):
        run_virtual(main)
    assert [r for r in caplog.records if "snubbed us" in r.getMessage()]  # the path under test was taken
