"""Disk full: that package stops with a clear status, the others keep working, it resumes later.

The cache lives on a small tmpfs (needs root and mount); "space returns" is a remount with a
larger size. Skipped, with the reason, where tmpfs cannot be mounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from p2pdist.engine.session import Session
from p2pdist.engine.settings import EngineSettings
from p2pdist.storage.files import FileStorage
from tests.support.agents import FAST_ENGINE, agent_settings, make_package, publish, read_package, running_agent, seeder, site_server, socket_dir, wait_state


def mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=20)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("disk-full test needs root to mount a tmpfs")
    result = mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if result.returncode != 0:
        reason = f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}"
        print(reason)
        pytest.skip(reason)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True, timeout=20).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


async def test_disk_full_stops_one_package_and_it_resumes(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "cache", "1200k") as cache:
        async with site_server(tmp_path / "server") as server:
            small = make_package("PS100012", 1, 300_000, announce=server.url + "/announce", seed=41)
            big = make_package("PS100013", 1, 2_000_000, announce=server.url + "/announce", seed=42)
            for package in (small, big):
                await publish(server, package.torrent)
            with socket_dir() as sockets:
                async with seeder(tmp_path / "seed", [small, big]):
                    settings = replace(agent_settings(tmp_path, 5, server.url, sockets), cache_dir=cache, retry_interval=0.3)
                    async with running_agent(settings) as (agent, client):
                        await client.ensure("PS100012")
                        done_small = await wait_state(client, "PS100012", "complete")
                        await client.ensure("PS100013")
                        failed = await wait_state(client, "PS100013", "error")
                        assert "No space left on device" in (failed.error or ""), failed.error
                        assert "retrying" in failed.error and failed.path is None
                        assert failed.error_kind == "disk-full"
                        # The other package keeps working: complete, and a new peer downloads it from us.
                        assert (await client.status("PS100012")).state == "complete"
                        leecher = Session(EngineSettings(listen_host="127.0.1.240", bind_host="127.0.1.240", **FAST_ENGINE), rng=random.Random(3))
                        await leecher.start()
                        try:
                            storage = FileStorage(small.meta.info, tmp_path / "leech", info_hash=small.meta.info_hash)
                            torrent = await leecher.add_torrent(small.meta, storage)
                            torrent.add_peer_addresses([("127.0.1.5", agent.session.port)])
                            await asyncio.wait_for(torrent.completed.wait(), 20)
                        finally:
                            await leecher.close()
                        assert read_package(tmp_path / "leech" / "PS100012", small) == small.data
                        # Still out of room: it stays in error and keeps what it has verified.
                        await asyncio.sleep(1.0)
                        stuck = await client.status("PS100013")
                        assert stuck.state == "error" and 0 < stuck.progress < 1
                        # Space returns: the download resumes and completes with correct content.
                        assert mount("-o", "remount,size=8m", str(cache)).returncode == 0
                        done_big = await wait_state(client, "PS100013", "complete", timeout=30)
                        assert done_big.error is None
                        assert read_package(Path(done_big.path), big) == big.data
                        assert read_package(Path(done_small.path), small) == small.data
                        # Pieces verified before the disk filled were kept: only the rest was fetched.
                        fetched_after = done_big.bytes_from_peers - stuck.bytes_from_peers
                        assert fetched_after <= (1 - stuck.progress) * len(big.data) + 4 * big.meta.info.piece_length
