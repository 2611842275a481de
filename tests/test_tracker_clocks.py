"""Steps of the wall clock do not move the site server's durations (peer expiry, rate limits).

The server runs for real on 127.0.0.1 while ``time.time`` is replaced by a wall clock the test
steps a day forward and a day back, as an NTP correction or an admin's typo would. Peer expiry
and the per-address rate limit are durations and must not notice; published-at stamps, stored
across restarts, do follow the wall clock.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from p2pdist.tracker.settings import LimitSettings, TrackerSettings
from p2pdist.tracker.web import STATE
from tests.support.siteserver import TORRENT, get_announce, make_settings, publish, running, session_from

DAY = 86_400.0
CEILING = 20.0  # seconds to wait for the housekeeping task's sweeps (they run every 0.05 s)


class SteppedWallClock:
    """``time.time`` plus an offset the test changes."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._real = time.time

    def __call__(self) -> float:
        return self._real() + self.offset


async def sweeps_after(state, count: int) -> None:  # type: ignore[no-untyped-def]
    """Wait until the housekeeping task has swept ``count`` more times."""
    target = state.sweeps + count
    async with asyncio.timeout(CEILING):
        while state.sweeps < target:
            await asyncio.sleep(0.02)


async def test_wall_clock_steps_neither_drop_peers_nor_lock_addresses_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = SteppedWallClock()
    monkeypatch.setattr(time, "time", wall)  # before the server is built, so it gets this clock
    tracker = TrackerSettings(interval=60, min_interval=30, peer_expiry=90, sweep_interval=0.05, repository_refresh=0.05)
    limits = LimitSettings(announce_rate=0.5, announce_burst=3)
    async with running(make_settings(tmp_path, tracker=tracker, limits=limits)) as server:
        state = server.runner.app[STATE]
        assert (await publish(server, TORRENT)).status == 201
        await get_announce(server, "127.1.0.5", 1, 7001)
        await get_announce(server, "127.1.0.8", 8, 7008)  # spends one of its three tokens

        wall.offset = DAY  # a day forward: 90 s peer expiry must not take everyone
        await sweeps_after(state, 3)
        assert await state.store.peer_count() == 2
        seen = await get_announce(server, "127.1.0.6", 6, 7006)
        assert set(seen.peers) == {("127.1.0.5", 7001), ("127.1.0.8", 7008)}

        wall.offset = -DAY  # a day back: the address must not be over its limit for a day
        again = await get_announce(server, "127.1.0.8", 8, 7008)  # a refusal would raise TrackerFailure
        assert ("127.1.0.5", 7001) in again.peers
        await sweeps_after(state, 3)
        assert await state.store.peer_count() == 3

        async with session_from() as session:  # stamps kept across restarts follow the wall clock
            async with session.get(server.url + "/api/packages") as response:
                published_at = (await response.json())["packages"][0]["published_at"]
        assert abs(published_at - (time.time() + DAY)) < 3600  # published before the steps
