"""A package that is not published, or was retired, is its own outcome: real site server, real
agent, real wrapper processes on 127.0.0.1.

The agent's status and log say "not published" (never "tracker unreachable"); the wrapper
returns the retry code while the grace lasts, then its failure code, so SMS stops retrying for
a week; a package published after all is fetched, and the refusal is forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from p2pdist.wrapper.exitcodes import EXIT_NOT_PUBLISHED, RETRY_DEFAULT, visible
from tests.support.agents import ADMIN, agent_settings, make_package, publish, running_agent, seeder, site_server, socket_dir, wait_state

GRACE = 3.0


async def wrapper(address: str, package: str, log: Path, *extra: str, grace: float = GRACE) -> tuple[int, str]:
    """One wrapper run in front of a command that would succeed: (exit status, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pdist.wrapper", "--agent", address, "--pkg", package,
        "--unpublished-grace", str(grace), *extra, sys.executable, "-c", "pass",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "P2PDIST_WRAPPER_LOG": str(log)},
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, err.decode()


async def retire(server_url: str, package: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server_url}/api/packages/{package}/retire", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status == 200


async def test_never_published_then_grace_then_published(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="p2pdist")
    log = tmp_path / "wrapper.log"
    async with site_server(tmp_path / "server") as server:
        with socket_dir() as sockets:
            settings = agent_settings(tmp_path, 41, server.url, sockets)
            async with running_agent(settings) as (agent, client):
                code, err = await wrapper(client.address, "PS1000F1", log)
                assert code == visible(RETRY_DEFAULT), err
                status = await client.status("PS1000F1")
                assert (status.state, status.error_kind) == ("error", "not-published")
                assert status.unpublished_since is not None and "not published" in (status.error or "")
                first = datetime.fromisoformat(status.unpublished_since.replace("Z", "+00:00")).timestamp()
                assert "outcome=retry" in log.read_text() and "not published" in log.read_text()
                assert "not published" in caplog.text and "unreachable" not in caplog.text
            # The first refusal outlives a restart: the grace is counted from it.
            async with running_agent(settings) as (agent, client):
                again = await client.ensure("PS1000F1")
                assert again.unpublished_since == status.unpublished_since
                await asyncio.sleep(max(0.0, first + GRACE + 1 - datetime.now().timestamp()))
                code, err = await wrapper(client.address, "PS1000F1", log)
                assert code == visible(EXIT_NOT_PUBLISHED), err
                assert "past the 3 s grace" in err
                last = log.read_text().splitlines()[-1]
                assert "outcome=not-published" in last and f"exit={EXIT_NOT_PUBLISHED}" in last
                code, _ = await wrapper(client.address, "PS1000F1", log, "--unpublished-code", "1603")
                assert code == visible(1603)
                # Published after all: the next run fetches it, and the refusal is forgotten.
                package = make_package("PS1000F1", 1, 50_000, announce=server.url + "/announce", seed=41)
                await publish(server, package.torrent)
                code, err = await wrapper(client.address, "PS1000F1", log)
                assert code == visible(RETRY_DEFAULT) and "not published" not in err, err
                status = await client.status("PS1000F1")
                assert status.error_kind != "not-published" and status.unpublished_since is None
                assert agent.state is not None and agent.state.refusals() == {}


async def test_retired_packages_run_from_a_complete_copy_and_say_so_when_incomplete(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="p2pdist")
    log = tmp_path / "wrapper.log"
    async with site_server(tmp_path / "server") as server:
        # PS1000A1 has no source at all (no peer, no web seed): it stays incomplete.
        stuck = make_package("PS1000A1", 1, 80_000, announce=server.url + "/announce", seed=42)
        whole = make_package("PS1000A2", 1, 60_000, announce=server.url + "/announce", seed=43)
        for package in (stuck, whole):
            await publish(server, package.torrent)
        with socket_dir() as sockets:
            settings = agent_settings(tmp_path, 42, server.url, sockets)
            async with running_agent(settings) as (agent, client):
                async with seeder(tmp_path / "seed", [whole]):
                    await client.ensure("PS1000A2")
                    await wait_state(client, "PS1000A2", "complete")
                await retire(server.url, "PS1000A2")
                code, err = await wrapper(client.address, "PS1000A2", log)
                assert code == 0, err  # retired, but complete here: it runs
                assert (await client.status("PS1000A2")).error_kind is None
                await client.ensure("PS1000A1")
                await wait_state(client, "PS1000A1", "downloading")
                await retire(server.url, "PS1000A1")
                status = await client.ensure("PS1000A1")
                assert (status.state, status.error_kind, status.version) == ("downloading", "not-published", 1), status
                assert status.unpublished_since is not None and "any more" in (status.error or "")
                code, err = await wrapper(client.address, "PS1000A1", log)
                assert code == visible(RETRY_DEFAULT) and "not published" in err, err
                code, err = await wrapper(client.address, "PS1000A1", log, grace=0)
                assert code == visible(EXIT_NOT_PUBLISHED), err
            # After a restart the tracker refuses the retired torrent: still "not published".
            async with running_agent(settings) as (agent, client):
                for _ in range(300):
                    (held,) = [p for p in agent.packages.values() if p.row.package_id == "PS1000A1"]
                    if held.tracker is not None and held.tracker.status.problem is not None:
                        break
                    await asyncio.sleep(0.1)
                status = await client.status("PS1000A1")
                assert status.error_kind == "not-published" and "tracker" not in (status.error_kind or ""), status
                assert "not published: the site server no longer tracks this package" in caplog.text
                assert "tracker unreachable" not in caplog.text
