"""Pre-staging end to end: a real site server, a distribution point, the agent daemon and the
wrapper as a process. The agent learns the order when it checks in (nothing asks it for the
package), completes it, and the wrapper then runs the command at once."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime
from pathlib import Path

import aiohttp
from aiohttp import web
from hypothesis import given, settings, strategies as st

from p2pdist.control.schema import PackageStatus
from p2pdist.agent.daemon import Agent
from p2pdist.agent.prestage import MAX_ORDERS, read_answer
from tests.support.http import serve_app
from tests.support.agents import ADMIN, agent_settings, make_package, publish, running_agent, site_server, socket_dir, write_source

CHECK_IN = 0.5  # report_interval: the agent checks in this often


def dp_app(root: Path, serving: dict[str, bool]) -> web.Application:
    """A distribution point; while ``serving["on"]`` is false it answers 503 to everything."""

    async def serve(request: web.Request) -> web.StreamResponse:
        path = root / request.match_info["tail"]
        if not serving["on"]:
            raise web.HTTPServiceUnavailable()
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/SMSPKG/{tail:.*}", serve)
    return app


async def order(server: str, package: str, site: str = "HQ", method: str = "POST", **body: object) -> dict:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        async with http.request(method, f"{server}/api/packages/{package}/prestage", json={"sites": [site], **body}) as reply:
            assert reply.status in (200, 201), await reply.text()
            return await reply.json()


async def wait_for(agent: Agent, package: str, state: str, timeout: float = 60.0) -> PackageStatus:
    """The package's status once it is ``state``; nothing but the agent itself acts on it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = [s for s in agent.list() if s.package_id == package]
        if found and found[0].state == state:
            return found[0]
        assert loop.time() < deadline, f"{package} not {state} after {timeout} s: {found}"
        await asyncio.sleep(0.05)


async def check_ins(agent: Agent, count: int) -> None:
    assert agent.reporter is not None
    target = agent.reporter.reports + count
    for _ in range(int(60 / 0.05)):
        if agent.reporter.reports >= target:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the agent stopped checking in")


async def wrapper(address: str, package: str, code: int, log: Path) -> tuple[int, float]:
    """Run ``p2pdist-wrapper --pkg PACKAGE python -c 'exit(code)'`` once: its exit code and time."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pdist.wrapper", "--agent", address, "--pkg", package,
        sys.executable, "-c", f"import sys; sys.exit({code})", env={**os.environ, "P2PDIST_WRAPPER_LOG": str(log)},
    )  # fmt: skip
    async with asyncio.timeout(60):
        returncode = await process.wait()
    return returncode, loop.time() - started


async def test_prestaged_package_is_complete_before_the_program_and_runs_at_once(tmp_path: Path) -> None:
    async with site_server(tmp_path / "server") as server:
        (tmp_path / "dp").mkdir()
        serving = {"on": True}
        runner, dp = await serve_app(dp_app(tmp_path / "dp", serving))
        try:
            packages = {}
            for n, package_id in enumerate(("PS100070", "PS100071", "PS100072")):
                packages[package_id] = make_package(package_id, 1, 200_000 + n, announce=server.url + "/announce", seed=70 + n,
                                                    web_seeds=(f"{dp}/SMSPKG/",))  # fmt: skip
                write_source(tmp_path / "dp", packages[package_id])
                await publish(server, packages[package_id].torrent)
            (placed,) = (await order(server.url, "PS100070"))["orders"]
            since = datetime.fromisoformat(placed["at"]).timestamp()
            with socket_dir() as sockets:
                settings = agent_settings(tmp_path, 1, server.url, sockets, report_interval=CHECK_IN, report_debounce=0.2)
                address = f"unix:{settings.control.socket_path}"
                async with running_agent(settings) as (agent, client):
                    status = await wait_for(agent, "PS100070", "complete")
                    assert status.version == 1 and status.bytes_from_webseed == 200_000
                    # Retention counts from the order, not from when the agent heard of it.
                    assert status.last_advertised == placed["at"] and agent.packages[status.info_hash].row.last_advertised == since
                    # The same order heard again does nothing more.
                    await check_ins(agent, 3)
                    assert len(agent.prestaged) == 1 and [s.package_id for s in agent.list()] == ["PS100070"]
                    assert agent.reporter is not None and agent.reporter.orders_tag  # acted on: the lists are not sent again
                    assert agent.packages[status.info_hash].row.last_advertised == since
                    # The advertisement runs: the wrapper finds it complete and starts at once.
                    serving["on"] = False  # the distribution point is gone: nothing could be fetched now
                    code, took = await wrapper(address, "PS100070", 7, tmp_path / "wrapper.log")
                    assert code == 7, (tmp_path / "wrapper.log").read_text()
                    (line,) = (tmp_path / "wrapper.log").read_text().splitlines()
                    assert "outcome=ran exit=7 " in line and took < 30
                    after = await client.status("PS100070")
                    assert after.bytes_from_webseed == 200_000 and after.last_advertised > placed["at"]

                    # Two more orders; then a program holds one, and both orders are cancelled.
                    serving["on"] = True
                    for package_id in ("PS100071", "PS100072"):
                        await order(server.url, package_id)
                    held = await wait_for(agent, "PS100071", "complete")
                    await wait_for(agent, "PS100072", "complete")
                    lease = await client.acquire("PS100071", os.getpid())
                    for package_id in ("PS100071", "PS100072"):
                        await order(server.url, package_id, method="DELETE")
                    for _ in range(int(60 / 0.05)):
                        if [key[0].split(":")[0] for key in agent.prestaged] == ["PS100070"]:  # both cancellations done
                            break
                        await asyncio.sleep(0.05)
                    kept = {s.package_id: s.state for s in agent.list()}
                    assert kept == {"PS100070": "complete", "PS100071": "complete"}  # in use: kept
                    assert (tmp_path / "agent1" / "cache" / held.info_hash).is_dir()
                    await client.release(lease)
                # After a restart the standing order is heard again and does nothing more.
                async with running_agent(settings) as (agent, client):
                    await check_ins(agent, 3)
                    assert sorted(s.package_id for s in agent.list()) == ["PS100070", "PS100071"]
                    assert len(agent.prestaged) == 1 and agent.fetches == {}
                    assert (await client.status("PS100070")).last_advertised == after.last_advertised
        finally:
            await runner.cleanup()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=40) | st.dictionaries(st.text(max_size=12), inner, max_size=8),
    max_leaves=60,
)
order_items = st.fixed_dictionaries({
    "order": st.text(max_size=250), "package": st.sampled_from(["PS100012", "ps1000aa", "nope", ""]),
    "version": st.integers(-2, 2**32) | st.booleans(), "info_hash": st.sampled_from(["ab" * 20, "AB" * 20, "x"]),
    "since": st.sampled_from(["2026-12-03T20:00:00Z", "2026-12-03T21:00:00+01:00", "soon"]),
})  # fmt: skip


@given(st.dictionaries(st.sampled_from(["prestage", "cancelled", "orders_tag"]),
                       json_values | st.lists(order_items | json_values, max_size=50)) | json_values)  # fmt: skip
@settings(max_examples=150, deadline=None)
def test_read_answer_takes_only_well_formed_orders_and_is_bounded(answer: object) -> None:
    orders, cancelled, tag = read_answer(answer)
    assert len(cancelled) <= MAX_ORDERS and all(isinstance(c, str) for c in cancelled)
    assert tag is None or isinstance(tag, str)
    if orders is None:
        assert not isinstance(answer, dict) or not ({"prestage", "cancelled"} & set(answer))
        return
    assert len(orders) <= MAX_ORDERS
    for order in orders:
        assert order.package_id in ("PS100012", "PS1000AA") and order.info_hash == "ab" * 20
        assert 0 <= order.version < 2**31 and order.since == 1796328000.0
