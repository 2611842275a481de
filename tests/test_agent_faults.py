"""Faults the agent rides out: a tracker that hangs at shutdown, a damaged database at start."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import aiohttp
import pytest

from p2pdist.errors import P2pdistError

from tests.support.trackers import HANG, ScriptedTracker
from tests.support.agents import ADMIN, agent_settings, make_package, publish, running_agent, seeder, site_server, socket_dir, wait_state

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
                    held.tracker.wake()
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


async def test_no_repository_rolls_an_agent_back_to_an_older_version(tmp_path: Path) -> None:
    async with site_server(tmp_path / "server") as server:
        old = make_package("PS100017", 2, 200_000, announce=server.url + "/announce", seed=17)
        new = make_package("PS100017", 3, 200_000, announce=server.url + "/announce", seed=18)
        for package in (old, new):
            await publish(server, package.torrent)
        with socket_dir() as sockets:
            settings = agent_settings(tmp_path, 8, server.url, sockets)
            async with seeder(tmp_path / "seed", [old, new]):
                async with running_agent(settings) as (_, client):
                    await client.ensure("PS100017")
                    assert (await wait_state(client, "PS100017", "complete")).version == 3
                    await retire(server, "PS100017", 3)  # the repository's latest is now v2
                    kept = await client.ensure("PS100017")
                    assert kept.version == 3 and kept.state == "complete"  # the newest it has
                    await client.remove("PS100017")
                    refused = await client.ensure("PS100017")
                    assert refused.state == "error" and "refusing a rollback" in (refused.error or ""), refused
                    asked = await client.ensure("PS100017", 2)  # a program that names the version
                    assert asked.version == 2
                    assert (await wait_state(client, "PS100017", "complete")).version == 2
                # The newest version seen outlives a restart: SMS source versions only grow, so
                # a program without a version still does not get v2; one that names it does.
                async with running_agent(settings) as (_, client):
                    again = await client.ensure("PS100017")
                    assert again.state == "error" and "refusing a rollback" in (again.error or ""), again
                    assert (await client.ensure("PS100017", 2)).version == 2


async def retire(server, package_id: str, version: int) -> None:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{server.url}/api/packages/{package_id}/retire", json={"version": version}, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as reply:
            assert reply.status == 200, await reply.text()


@pytest.mark.skipif(os.name != "posix", reason="POSIX folder modes; Windows folders get their ACL from the installer")
async def test_cache_and_state_folders_others_could_write_are_locked_down(tmp_path: Path) -> None:
    """Only the owner may replace what the pre-run check proved."""
    with socket_dir() as sockets:
        settings = agent_settings(tmp_path, 9, "http://127.0.0.1:9", sockets)
        for folder in (settings.cache_dir, settings.state_dir):
            folder.mkdir(parents=True)
            folder.chmod(0o777)
        async with running_agent(settings):
            for folder in (settings.cache_dir, settings.state_dir):
                assert stat.S_IMODE(folder.stat().st_mode) & 0o022 == 0, folder
        if os.geteuid() != 0:
            print("skipping the foreign-owner half: it needs root to chown")
            return
        os.chown(settings.cache_dir, 65534, 65534)  # nobody
        with pytest.raises(P2pdistError, match="belongs to user id 65534"):
            async with running_agent(settings):
                pass
