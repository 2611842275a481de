"""Real agents, the real site server and a seed on 127.0.0.1: ensure, download, refuse, report."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from p2pdist.control.schema import ControlError
from p2pdist.outcomes import State
from tests.support.http import serve_app
from tests.support.agents import (
    agent_settings,
    make_package,
    publish,
    read_package,
    running_agent,
    seeder,
    server_state,
    site_server,
    socket_dir,
    wait_state,
    write_source,
)
from p2pdist.metainfo.signing import generate_key


async def test_three_agents_complete_through_the_control_api(tmp_path: Path) -> None:
    async with site_server(tmp_path / "server") as server:
        package = make_package("PS100012", 1, 1_500_000, announce=server.url + "/announce", seed=1)
        await publish(server, package.torrent)
        with socket_dir() as sockets:
            async with seeder(tmp_path / "seed", [package]) as (seed,):
                async with running_agent(agent_settings(tmp_path, 1, server.url, sockets)) as (a1, c1), \
                        running_agent(agent_settings(tmp_path, 2, server.url, sockets)) as (a2, c2), \
                        running_agent(agent_settings(tmp_path, 3, server.url, sockets)) as (a3, c3):  # fmt: skip
                    first = await c1.ensure("ps100012")  # case-insensitive PackageID
                    assert first.state in ("checking", "downloading", "complete")
                    assert first.info_hash == package.meta.info_hash_hex and first.version == 1
                    await asyncio.gather(c2.ensure("PS100012"), c3.ensure("PS100012", 1))
                    done = await asyncio.gather(*(wait_state(c, "PS100012", "complete") for c in (c1, c2, c3)))
                    for agent, status in zip((a1, a2, a3), done):
                        assert status.path is not None and status.progress == 1.0 and status.size == len(package.data)
                        assert Path(status.path) == agent.settings.cache_dir / package.meta.info_hash_hex / "PS100012"
                        assert read_package(Path(status.path), package) == package.data
                        assert status.bytes_from_peers == len(package.data) and status.bytes_from_webseed == 0
                        assert status.completed_at is not None and status.seed_until > status.last_advertised
                        assert not list(Path(status.path).parent.glob("*.part"))
                    listed = await c1.list()
                    assert [s.package_id for s in listed] == ["PS100012"]
                    metrics = await c1.metrics()
                    assert 'p2pdist_agent_received_bytes_total{source="peers"} 1.5e+06' in metrics
                    assert 'p2pdist_agent_packages{state="complete"} 1.0' in metrics
                    # Each completed agent reported its totals; the server sums them per site.
                    for _ in range(100):
                        tally = (await server_state(server).ledger.tallies()).get(("PS100012", 1, "HQ"))
                        if tally is not None and tally.state(State.COMPLETE) == 3 and tally.from_peers == 3 * len(package.data):
                            break
                        await asyncio.sleep(0.1)
                    assert tally is not None and tally.state(State.COMPLETE) == 3 and tally.agents == 3
                    assert tally.from_peers == 3 * len(package.data)


def fake_repository(body: bytes, status: int = 200) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, status=status, content_type="application/x-bittorrent")

    app = web.Application()
    app.router.add_get("/packages/{tail:.*}", handler)
    return app


@pytest.mark.parametrize(
    ("case", "message", "kind"),
    [
        ("corrupt", "corrupt torrent", "torrent-refused"),
        ("unsigned", "unsigned", "signature"),
        ("foreign-key", "not trusted", "signature"),
        ("tampered", "does not verify", "signature"),
        ("other-package", "not PS100012", "torrent-refused"),
        ("public", "not private", "torrent-refused"),
        ("not-found", "not published", "not-published"),
    ],
)
async def test_bad_torrents_from_the_repository_are_refused(tmp_path: Path, case: str, message: str, kind: str) -> None:
    announce = "http://127.0.0.1:9/announce"
    good = make_package("PS100012", 2, 100_000, announce=announce)
    body, status = good.torrent, 200
    if case == "corrupt":
        body = good.torrent[:-40]
    elif case == "unsigned":
        body = make_package("PS100012", 2, 100_000, announce=announce, key=None).torrent
    elif case == "foreign-key":
        body = make_package("PS100012", 2, 100_000, announce=announce, key=generate_key()).torrent
    elif case == "tampered":
        body = good.torrent.replace(b"9/announce", b"8/announce")  # outside info: hash same, signature still binds
        body = body.replace(good.meta.info.piece_hashes[:20], bytes(20), 1)  # inside info: info-hash changes
    elif case == "other-package":
        body = make_package("PS100013", 2, 100_000, announce=announce).torrent
    elif case == "public":
        body = make_package("PS100012", 2, 100_000, announce=announce, private=False).torrent
    elif case == "not-found":
        body, status = b'{"error": "no published package PS100012"}', 404
    runner, url = await serve_app(fake_repository(body, status))
    try:
        with socket_dir() as sockets:
            settings = agent_settings(tmp_path, 7, url, sockets)
            async with running_agent(settings) as (agent, client):
                status_ = await client.ensure("PS100012")
                assert status_.state == "error" and message in (status_.error or ""), status_
                assert status_.error_kind == kind
                assert status_.info_hash is None and status_.path is None
                assert (await client.status("PS100012")).state == "error"
                assert agent.packages == {}
                assert list(settings.cache_dir.iterdir()) == []
                assert list((settings.state_dir / "torrents").iterdir()) == []
                with pytest.raises(ControlError) as refused:
                    await client.acquire("PS100012", 1)
                assert refused.value.status == 404
    finally:
        await runner.cleanup()


async def test_web_seed_fills_in_once_then_the_branch_serves_itself(tmp_path: Path) -> None:
    async with site_server(tmp_path / "server") as server:
        (tmp_path / "dp").mkdir()
        dp = web.Application()
        dp.router.add_static("/SMSPKG/", tmp_path / "dp")
        runner, dp_base = await serve_app(dp)
        dp_url = f"{dp_base}/SMSPKG/"
        try:
            package = make_package("PS100014", 1, 700_000, announce=server.url + "/announce", seed=4, web_seeds=(dp_url,))
            write_source(tmp_path / "dp", package)
            await publish(server, package.torrent)
            with socket_dir() as sockets:
                first = replace(agent_settings(tmp_path, 8, server.url, sockets), web_seed_grace=0.1)
                second = replace(agent_settings(tmp_path, 9, server.url, sockets), web_seed_grace=5.0)
                async with running_agent(first) as (_, c1):
                    await c1.ensure("PS100014")
                    one = await wait_state(c1, "PS100014", "complete")
                    assert (one.bytes_from_webseed, one.bytes_from_peers) == (len(package.data), 0)
                    async with running_agent(second) as (_, c2):
                        await c2.ensure("PS100014")
                        two = await wait_state(c2, "PS100014", "complete")
                        assert (two.bytes_from_webseed, two.bytes_from_peers) == (0, len(package.data))
                        assert read_package(Path(two.path), package) == package.data
                        assert (await c1.status("PS100014")).uploaded >= len(package.data)
            tally = (await server_state(server).ledger.tallies())[("PS100014", 1, "HQ")]
            assert (tally.from_webseed, tally.from_peers, tally.state(State.COMPLETE)) == (len(package.data), len(package.data), 2)
        finally:
            await runner.cleanup()
