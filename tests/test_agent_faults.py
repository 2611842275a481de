"""Faults the agent rides out: a tracker that hangs at shutdown, a damaged database at start."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.trackers import HANG, ScriptedTracker
from test_agent_helpers import agent_settings, make_package, publish, running_agent, seeder, site_server, socket_dir, wait_state

STOP_CEILING = 15.0  # the stop window a Windows service host gives the agent (docs/agent.md)


async def test_agent_stops_in_time_while_an_announce_hangs(tmp_path: Path) -> None:
    async with site_server(tmp_path / "server") as server:
        package = make_package("PS100014", 1, 400_000, announce=server.url + "/announce", seed=14)
        await publish(server, package.torrent)
        with socket_dir() as sockets, ScriptedTracker(HANG) as hanging:
            async with seeder(tmp_path / "seed", [package]):
                async with running_agent(agent_settings(tmp_path, 4, server.url, sockets)) as (agent, client):
                    await client.ensure("PS100014")
                    await wait_state(client, "PS100014", "complete")
                    (held,) = agent.packages.values()
                    assert held.tracker is not None and held.tracker.status.last_success is not None
                    # The next announce goes to a tracker that accepts and never answers.
                    held.tracker.tiers = [[hanging.url]]
                    held.tracker._wake.set()
                    await asyncio.to_thread(hanging.wait_requests, 1)
                    loop = asyncio.get_running_loop()
                    started = loop.time()
                    async with asyncio.timeout(120):
                        await agent.close()
                    took = loop.time() - started
                    assert took < STOP_CEILING, f"agent took {took:.1f} s to stop"
                    assert all(p.torrent is None or p.torrent.stopped.is_set() for p in agent.packages.values())


async def test_a_damaged_database_is_moved_aside_and_the_cache_is_proven_again(tmp_path: Path) -> None:
    """The agent comes up on a database SQLite calls damaged, and rebuilds from its torrents."""
    async with site_server(tmp_path / "server") as server:
        package = make_package("PS100015", 2, 300_000, announce=server.url + "/announce", seed=15)
        await publish(server, package.torrent)
        with socket_dir() as sockets:
            settings = agent_settings(tmp_path, 5, server.url, sockets)
            async with seeder(tmp_path / "seed", [package]):
                async with running_agent(settings) as (_, client):
                    await client.ensure("PS100015")
                    first = await wait_state(client, "PS100015", "complete")
            database = settings.state_dir / "agent.sqlite3"
            raw = bytearray(database.read_bytes())
            raw[100 : len(raw)] = b"\xff" * (len(raw) - 100)  # header kept, every page garbage
            database.write_bytes(bytes(raw))
            # No seed now: whatever completes here was proven from the cache, not fetched again.
            async with running_agent(settings) as (agent, client):
                assert agent.state is not None and agent.state.quarantined is not None
                assert agent.state.quarantined.exists()
                again = await wait_state(client, "PS100015", "complete")
                assert again.path == first.path and again.version == 2
                assert (await client.list())[0].package_id == "PS100015"
            assert [p.name for p in settings.state_dir.glob("agent.sqlite3.damaged-*")] == [agent.state.quarantined.name]
