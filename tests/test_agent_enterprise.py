"""A small enterprise on 127.0.0.0/8: three sites of three real agents, the real site server and
a distribution point, and the console's JSON API telling the sites apart.

Sites are subnets of 127/8 (each agent binds its own source address, so the server places it by
its packets, as in production). The distribution point stands for each site's own DP behind one
name: it answers Range requests, except to site C's PCs, where it behaves like a web server that
ignores Range (200 with the whole file), so C's PCs can get nothing and must say why.

Beside that package, one is pre-staged to site A (its agents fetch it when they check in, with
no program asking), and one is retired after site B took it (PCs that ask for it later hear
"not published").
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
from aiohttp import web

from p2pdist.engine.settings import EngineSettings
from p2pdist.tracker.server import RunningServer, start
from p2pdist.tracker.settings import SiteSettings
from p2pdist.tracker.web import build_app
from tests.support.http import serve_app
from tests.support.agents import (
    ADMIN,
    FAST_ENGINE,
    agent_settings,
    make_package,
    publish,
    running_agent,
    server_settings,
    socket_dir,
    wait_state,
    write_source,
)

SITES = {"A": "127.0.1.0/24", "B": "127.0.2.0/24", "C": "127.0.3.0/24"}
BLIND = ipaddress.ip_network(SITES["C"])  # the site whose DP ignores Range
REPORT_INTERVAL = 60.0  # the console must show a change well within one of these


def site_dp(root: Path) -> web.Application:
    async def serve(request: web.Request) -> web.StreamResponse:
        path = root / request.match_info["tail"]
        if not path.is_file():
            raise web.HTTPNotFound()
        if ipaddress.ip_address(request.remote or "0.0.0.0") in BLIND:
            return web.Response(body=path.read_bytes(), content_type="application/octet-stream")  # Range ignored
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/SMSPKG/{tail:.*}", serve)
    return app


@contextlib.asynccontextmanager
async def enterprise(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, str]]:
    """The site server and the DP's base URL."""
    settings = replace(server_settings(tmp_path / "server"), sites=tuple(SiteSettings(name, (net,)) for name, net in SITES.items()))
    server = await start(build_app(settings), settings.listen, "127.0.0.1", 0)
    (tmp_path / "dp").mkdir()
    runner, dp = await serve_app(site_dp(tmp_path / "dp"))
    try:
        yield server, dp
    finally:
        await runner.cleanup()
        await server.stop()


def pc(tmp_path: Path, server: str, sockets: Path, site: str, n: int):  # type: ignore[no-untyped-def]
    host = str(ipaddress.ip_network(SITES[site])[10 + n])
    number = 10 * (ord(site) - ord("A") + 1) + n
    settings = agent_settings(tmp_path, number, server, sockets, web_seed_grace=0.5, report_interval=REPORT_INTERVAL)
    return replace(settings, engine=EngineSettings(listen_host=host, bind_host=host, **FAST_ENGINE))  # type: ignore[arg-type]


async def sites_of(http: aiohttp.ClientSession, server: str, package: str) -> dict[str, dict]:
    async with http.get(f"{server}/api/packages/{package}/sites") as reply:
        assert reply.status == 200, await reply.text()
        view = await reply.json()
    return {row["site"]: row for row in view["versions"][0]["sites"]}


async def admin(method: str, url: str, body: dict) -> dict:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        async with http.request(method, url, json=body) as reply:
            assert reply.status in (200, 201), await reply.text()
            return await reply.json()


async def test_per_site_readiness_and_the_range_error_at_the_right_site(tmp_path: Path) -> None:
    async with enterprise(tmp_path) as (site_server, dp):
        server = site_server.url
        package = make_package("PS100050", 1, 600_000, announce=server + "/announce", seed=50, web_seeds=(f"{dp}/SMSPKG/",))
        staged = make_package("PS100051", 1, 300_000, announce=server + "/announce", seed=51, web_seeds=(f"{dp}/SMSPKG/",))
        retired = make_package("PS100052", 1, 200_000, announce=server + "/announce", seed=52, web_seeds=(f"{dp}/SMSPKG/",))
        for each in (package, staged, retired):
            write_source(tmp_path / "dp", each)
            await publish(site_server, each.torrent)
        (order,) = (await admin("POST", f"{server}/api/packages/PS100051/prestage", {"sites": ["A"]}))["orders"]
        with socket_dir() as sockets:
            async with contextlib.AsyncExitStack() as stack:
                clients = {}
                for site in SITES:
                    for n in range(3):
                        _, client = await stack.enter_async_context(running_agent(pc(tmp_path, server, sockets, site, n)))
                        clients[(site, n)] = client
                await asyncio.gather(*(client.ensure("PS100050") for client in clients.values()))
                gone = await clients[("B", 2)].ensure("PS1000FF")  # a program for a package never published
                assert (gone.state, gone.error_kind) == ("error", "not-published")
                # Site B takes PS100052; then it is retired, and PCs that ask for it hear so.
                await asyncio.gather(*(clients[("B", n)].ensure("PS100052") for n in range(3)))
                await asyncio.gather(*(wait_state(clients[("B", n)], "PS100052", "complete", timeout=60) for n in range(3)))
                await admin("POST", f"{server}/api/packages/PS100052/retire", {})
                for n in range(3):
                    late = await clients[("A", n)].ensure("PS100052")
                    assert (late.state, late.error_kind) == ("error", "not-published") and "PS100052" in (late.error or "")
                ready = [wait_state(c, "PS100050", "complete", timeout=60) for (site, _), c in clients.items() if site != "C"]
                for status in await asyncio.gather(*ready):
                    assert status.bytes_from_peers + status.bytes_from_webseed == len(package.data)

                async def blocked(client) -> None:  # type: ignore[no-untyped-def]
                    for _ in range(600):
                        status = await client.status("PS100050")
                        if status.error_kind == "range-unsupported":
                            assert status.state == "downloading" and status.progress == 0.0
                            return
                        await asyncio.sleep(0.1)
                    raise AssertionError(f"no range error: {status}")

                await asyncio.gather(*(blocked(c) for (site, _), c in clients.items() if site == "C"))
                # Site A's PCs fetched the pre-staged package on their own (no program asked:
                # its advertisement is the order's time); the other sites' PCs did not.
                for (site, n), client in clients.items():
                    if site == "A":
                        for _ in range(600):  # until the agent has heard the order (it checks in soon after start)
                            if "PS100051" in {s.package_id for s in await client.list()}:
                                break
                            await asyncio.sleep(0.1)
                        status = await wait_state(client, "PS100051", "complete", timeout=60)
                        assert status.last_advertised == order["at"] and not status.in_use
                    else:
                        assert "PS100051" not in {s.package_id for s in await client.list()}
                # Every agent now knows its outcome; the console must have it within one report
                # interval (the agents report a change of state or problem at once).
                loop = asyncio.get_running_loop()
                started = loop.time()
                async with aiohttp.ClientSession() as http:
                    while True:
                        rows = await sites_of(http, server, "PS100050")
                        staged_rows = await sites_of(http, server, "PS100051")
                        done = (rows["A"]["complete"], rows["B"]["complete"], rows["C"]["errors"].get("range-unsupported"),
                                staged_rows["A"]["complete"])  # fmt: skip
                        if done == (3, 3, 3, 3):
                            break
                        assert loop.time() - started < REPORT_INTERVAL, f"console still shows {rows}"
                        await asyncio.sleep(0.2)
                    for site in "AB":
                        assert (rows[site]["agents"], rows[site]["errors"], rows[site]["seeding"]) == (3, {}, 3)
                        assert rows[site]["bytes"]["from_peers"] + rows[site]["bytes"]["from_webseed"] == 3 * len(package.data)
                    assert (rows["C"]["agents"], rows["C"]["complete"], rows["C"]["downloading"]) == (3, 0, 3)
                    assert rows["C"]["bytes"]["from_webseed"] == 0 and rows["C"]["leeching"] == 3
                    async with http.get(f"{server}/api/sites/C") as reply:
                        stuck = (await reply.json())["stuck"]
                    assert sorted(s["address"] for s in stuck) == [str(ipaddress.ip_network(SITES["C"])[10 + n]) for n in range(3)]
                    assert all(s["error_kind"] == "range-unsupported" and "ignores range" in s["error"] for s in stuck)
                    async with http.get(f"{server}/api/sites/A") as reply:  # stuck only on the retired package
                        stuck = (await reply.json())["stuck"]
                    assert sorted((s["package"], s["version"], s["error_kind"]) for s in stuck) == [("PS100052", None, "not-published")] * 3
                    async with http.get(f"{server}/api/sites/B") as reply:
                        (unpublished,) = (await reply.json())["stuck"]
                    assert (unpublished["package"], unpublished["version"], unpublished["error_kind"]) == ("PS1000FF", None, "not-published")
                    assert unpublished["address"] == str(ipaddress.ip_network(SITES["B"])[12])
                    refused = await sites_of(http, server, "PS1000FF")
                    assert [(site, row["errors"]) for site, row in refused.items() if row["agents"]] == [("B", {"not-published": 1})]
                    # Pre-staged to A, complete there before any program ran; not sent elsewhere.
                    assert {site: (row["prestaged_since"], row["complete"], row["in_use"]) for site, row in staged_rows.items()} == {
                        "A": (order["at"], 3, 0), "B": (None, 0, 0), "C": (None, 0, 0)}  # fmt: skip
                    async with http.get(f"{server}/api/sites/A") as reply:
                        assert (await reply.json())["prestaged"] == [{"package": "PS100051", "version": 1, "since": order["at"]}]
                    # The page for people shows the same: readiness per site, the range error at C,
                    # the pre-staged mark at A only.
                    page_rows = {}
                    for pkg in ("PS100050", "PS100051"):
                        async with http.get(f"{server}/package/{pkg}") as reply:
                            assert reply.status == 200
                            page_rows[pkg] = dict(re.findall(r'<tr data-site="([^"]+)">(.*?)</tr>', await reply.text(), re.S))
                    assert "3 of 3" in page_rows["PS100050"]["A"] and "3 of 3" in page_rows["PS100050"]["B"]
                    assert "0 of 3" in page_rows["PS100050"]["C"] and "range-unsupported" in page_rows["PS100050"]["C"]
                    assert "range-unsupported" not in page_rows["PS100050"]["A"] + page_rows["PS100050"]["B"]
                    assert "pre-staged" in page_rows["PS100051"]["A"] and "3 of 3" in page_rows["PS100051"]["A"]
                    assert "pre-staged" not in page_rows["PS100051"]["B"] + page_rows["PS100051"]["C"]
                    # The retired version says so; A's PCs that asked for it since are "not published".
                    async with http.get(f"{server}/api/packages/PS100052/sites") as reply:
                        view = await reply.json()
                    assert view["current_version"] is None
                    by_version = {v["version"]: v for v in view["versions"]}
                    assert by_version[1]["status"] == "retired" and by_version[1]["retired_at"] is not None
                    assert {row["site"]: row["complete"] for row in by_version[1]["sites"]} == {"A": 0, "B": 3, "C": 0}
                    assert {row["site"]: row["errors"] for row in by_version[None]["sites"] if row["agents"]} == {"A": {"not-published": 3}}

