"""The agent as a real process: kill -9 mid-download, restart, resume; SIGTERM stops cleanly."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import time
from pathlib import Path

from p2pdist.control.client import ControlClient

from p2pdist.control.schema import AgentUnavailable
from p2pdist.config import toml_value
from tests.support.agents import PUBLIC_HEX, make_package, publish, read_package, seeder, server_state, site_server, socket_dir, wait_state

HOST = "127.0.1.20"


def write_config(path: Path, root: Path, repository: str, sock: Path, download_limit: int) -> Path:
    path.write_text(
        f"""
repository = {toml_value(repository)}
public_keys = ["{PUBLIC_HEX}"]
cache_dir = {toml_value(root / 'cache')}
state_dir = {toml_value(root / 'state')}
log_file = {toml_value(root / 'agent.log')}
flush_interval = 0.5

[engine]
listen_host = "{HOST}"
listen_port = 0
bind_host = "{HOST}"
download_rate_limit = {download_limit}
tick_interval = 0.2
choke_interval = 1.0

[control]
address = {toml_value(f"unix:{sock}")}
"""
    )
    return path


async def start_agent(config: Path, client: ControlClient) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pdist.agent", "--config", str(config), stderr=asyncio.subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            await client.list()
            return process
        except AgentUnavailable:
            if process.returncode is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"agent did not come up (exit {process.returncode})") from None
            await asyncio.sleep(0.1)


async def test_kill_9_then_restart_resumes_without_refetching(tmp_path: Path) -> None:
    async with site_server(tmp_path / "server") as server:
        package = make_package("PS100012", 5, 3_000_000, announce=server.url + "/announce", seed=31)
        size = len(package.data)
        await publish(server, package.torrent)
        root = tmp_path / "agent"
        with socket_dir() as sockets:
            sock = sockets / "agent.sock"
            client = ControlClient(f"unix:{sock}", timeout=10)
            async with seeder(tmp_path / "seed", [package]) as (seed,):
                slow = write_config(tmp_path / "slow.toml", root, server.url, sock, download_limit=700_000)
                process = await start_agent(slow, client)
                try:
                    status = await client.ensure("PS100012")
                    deadline = time.monotonic() + 20
                    while status.progress < 0.3:
                        assert status.state in ("checking", "downloading") and time.monotonic() < deadline, status
                        await asyncio.sleep(0.1)
                        status = await client.status("PS100012")
                finally:
                    process.kill()  # SIGKILL: no stopped announce, no resume data saved on the way out
                    await process.wait()
                assert process.returncode == -signal.SIGKILL
                assert status.state == "downloading" and status.progress < 1.0
                staged = root / "cache" / package.meta.info_hash_hex / "PS100012.part"
                assert staged.is_dir()
                before = seed.upload_meter.total

                fast = write_config(tmp_path / "fast.toml", root, server.url, sock, download_limit=0)
                process = await start_agent(fast, client)
                try:
                    done = await wait_state(client, "PS100012", "complete", timeout=30)
                    refetched = seed.upload_meter.total - before
                    assert 0 < refetched < size - 0.25 * size, (refetched, size)
                    assert read_package(Path(done.path), package) == package.data
                    assert not staged.exists()
                    counts = await server_state(server).store.counts(package.meta.info_hash, server_state(server).store.clock())
                    assert counts["HQ"].seeders == 2
                    process.send_signal(signal.SIGTERM)
                    assert await asyncio.wait_for(process.wait(), 15) == 0
                finally:
                    if process.returncode is None:
                        process.kill()
                        await process.wait()
                counts = await server_state(server).store.counts(package.meta.info_hash, server_state(server).store.clock())
                assert counts["HQ"].seeders == 1  # the SIGTERM'd agent said "stopped"
        assert not sock.exists()
        db = sqlite3.connect(root / "state" / "agent.sqlite3")
        try:
            state, completed_at, from_peers = db.execute(
                "SELECT state, completed_at, bytes_from_peers FROM packages WHERE info_hash = ?", (package.meta.info_hash_hex,)
            ).fetchone()
        finally:
            db.close()
        assert state == "complete" and completed_at is not None and from_peers >= refetched
        assert "complete" in (root / "agent.log").read_text()
