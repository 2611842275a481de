"""A package's problem has a kind everywhere it shows: the control API, ``p2pdist status`` and
the agent's report to the site server (real agent, site server and web servers on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from p2pdist.control.schema import PackageStatus
from p2pdist.agent.reporting import Reporter, encode, entry_of
from p2pdist.outcomes import Problem, State, most_blocking, problem_kind
from p2pdist.tracker.reports import MAX_ENTRIES, ReportEntry, ReportError, parse_report
from tests.support.http import serve_app
from tests.support.agents import agent_settings, make_package, publish, running_agent, site_server, socket_dir, write_source


def range_blind_dp(root: Path) -> web.Application:
    """A distribution point whose web server ignores Range: every GET answers 200 with the whole file."""

    async def whole_file(request: web.Request) -> web.Response:
        path = root / request.match_info["tail"]
        if not path.is_file():
            raise web.HTTPNotFound()
        return web.Response(body=path.read_bytes(), content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/SMSPKG/{tail:.*}", whole_file)
    return app


async def poll(check, timeout: float = 30.0, step: float = 0.1):  # type: ignore[no-untyped-def]
    """Await ``check()`` until it returns something true (bounded); that value."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last: {value!r})")
        await asyncio.sleep(step)


async def test_a_dp_that_ignores_range_is_a_range_unsupported_error(tmp_path: Path) -> None:
    (tmp_path / "dp").mkdir()
    runner, dp_base = await serve_app(range_blind_dp(tmp_path / "dp"))
    try:
        async with site_server(tmp_path / "server") as server:
            package = make_package("PS100031", 1, 400_000, announce=server.url + "/announce", seed=31,
                                   web_seeds=(f"{dp_base}/SMSPKG/",))  # fmt: skip
            write_source(tmp_path / "dp", package)
            await publish(server, package.torrent)
            with socket_dir() as sockets:
                settings = replace(agent_settings(tmp_path, 31, server.url, sockets), web_seed_grace=0.1)
                async with running_agent(settings) as (agent, client):
                    await client.ensure("PS100031")

                    async def blocked() -> PackageStatus | None:
                        status = await client.status("PS100031")
                        return status if status.error_kind == "range-unsupported" else None

                    status = await poll(blocked)
                    assert status.state == "downloading" and status.progress == 0.0
                    assert "ignores range requests" in (status.error or "") and dp_base in (status.error or "")
                    table = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "p2pdist", "status", "--agent", client.address,
                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    )  # fmt: skip
                    async with asyncio.timeout(30):
                        out, err = await table.communicate()
                    assert table.returncode == 0, err
                    lines = out.decode().splitlines()
                    assert lines[1].split()[:4] == ["PS100031", "1", "downloading", "range-unsupported"]
                    assert any(line.startswith("PS100031 v1: range-unsupported: ") for line in lines)
                    # The report the agent sends carries the kind too.
                    entry = entry_of(status)
                    assert entry.problem is Problem.RANGE_UNSUPPORTED and entry.state is State.DOWNLOADING
                    assert ReportEntry.from_json(json.loads(encode([entry]))["packages"][0]) == entry
                    assert agent.reporter is not None
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------------------ the reporter


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, list[list[dict]], dict[str, int]]]:
    """A real HTTP endpoint that records each report's entries; ``control["fail"]`` > 0 makes
    that many requests fail with 503."""
    seen: list[list[dict]] = []
    control = {"fail": 0}

    async def report(request: web.Request) -> web.Response:
        body = await request.json()
        if control["fail"] > 0:
            control["fail"] -= 1
            return web.json_response({"error": "down"}, status=503)
        seen.append(parse_report(body))  # type: ignore[arg-type]
        return web.json_response({"ok": True, "accepted": len(seen[-1]), "refused": []})

    app = web.Application()
    app.router.add_post("/api/report", report)
    runner, url = await serve_app(app)
    try:
        yield url + "/api/report", seen, control
    finally:
        await runner.cleanup()


def status(n: int, **changes: object) -> PackageStatus:
    base = PackageStatus(f"PS1{n:05X}", 1, f"{n:040x}", f"PS1{n:05X}", "downloading", 0.5, 1000, 100, 50, 0)
    return base.replace(**changes)


async def test_reporter_sends_changes_in_batches_and_refreshes(recorder) -> None:  # type: ignore[no-untyped-def]
    url, everything, control = recorder
    now = [0.0]
    statuses = [status(n) for n in range(MAX_ENTRIES + 6)]

    class Sent(list):  # the reports that carried entries; empty ones are check-ins
        def __init__(self) -> None:
            super().__init__(b for b in everything if b)

    async with aiohttp.ClientSession() as http:
        reporter = Reporter(http, url, lambda: list(statuses), refresh=100.0, debounce=0.05, clock=lambda: now[0])
        await reporter.report()
        assert [len(batch) for batch in everything] == [MAX_ENTRIES, 6]  # everything once, in bounded batches
        await reporter.report()
        assert everything[2:] == [[]]  # nothing changed: only a check-in, with no entries
        statuses[3] = statuses[3].replace(state="error", error="disk full", error_kind="disk-full")
        await reporter.report()
        seen = Sent()
        assert len(seen) == 3 and [e["package"] for e in seen[2]] == [statuses[3].package_id]
        assert seen[2][0]["error_kind"] == "disk-full" and seen[2][0]["state"] == "error"
        # A failed send is sent again next time, and only then counts as taken.
        statuses[4] = statuses[4].replace(bytes_from_peers=999)
        control["fail"] = 1
        await reporter.report()
        assert len(Sent()) == 3
        await reporter.report()
        seen = Sent()
        assert len(seen) == 4 and seen[3][0]["from_peers"] == 999
        # The refresh sends everything again, so the server can tell a PC still there.
        now[0] = 150.0
        await reporter.report()
        assert sum(len(batch) for batch in Sent()[4:]) == len(statuses)
        # A burst of changes, one report soon after.
        for n in (1, 2, 5):
            statuses[n] = statuses[n].replace(state="complete", progress=1.0)
            reporter.soon()
        async def sent_once() -> bool:
            return len(Sent()) == 7

        await poll(sent_once)
        await asyncio.sleep(0.2)
        seen = Sent()
        assert len(seen) == 7 and sorted(e["package"] for e in seen[6]) == sorted(statuses[n].package_id for n in (1, 2, 5))
        assert reporter.reports == len(everything) == 8 and reporter.sent_bytes > 0
        await reporter.close()


def test_report_entries_round_trip_and_refuse_junk() -> None:
    entry = entry_of(status(7, error="x" * 500, error_kind="future-kind", in_use=True))
    assert entry.problem is Problem.OTHER and entry.in_use
    parsed = ReportEntry.from_json(entry.to_json())
    assert parsed.error is not None and len(parsed.error) == 200
    assert parsed.labels() == ("in-use", "kind:other", "seen", "state:downloading")
    unversioned = ReportEntry.from_json({"package": "ps1000ff", "version": None, "state": "error", "error_kind": "not-published"})
    assert (unversioned.package_id, unversioned.stored_version, unversioned.problem) == ("PS1000FF", -1, Problem.NOT_PUBLISHED)
    legacy = ReportEntry.from_json({"info_hash": "a" * 40, "package": "PS100012", "version": 2, "from_peers": 5,
                                    "from_webseed": 1, "uploaded": 0, "completed": True})  # fmt: skip
    assert legacy.state is State.COMPLETE and legacy.completed and legacy.labels() == ("seen", "state:complete")
    for bad in (
        [],
        {"package": "nope"},
        {"package": "PS100012", "version": -1, "state": "error"},
        {"package": "PS100012", "version": 1, "info_hash": "zz" * 20, "state": "complete"},
        {"package": "PS100012", "version": 1, "state": "downloading"},  # no info-hash: only fetch outcomes
        {"package": "PS100012", "version": 1, "info_hash": "a" * 40, "state": "sleeping"},
        {"package": "PS100012", "version": 1, "info_hash": "a" * 40, "state": "complete", "from_peers": True},
        {"package": "PS100012", "version": 1, "info_hash": "a" * 40, "state": "complete", "progress": float("nan")},
    ):
        with pytest.raises(ReportError):
            ReportEntry.from_json(bad)
    with pytest.raises(ReportError):
        parse_report({"packages": [{}] * (MAX_ENTRIES + 1)})
    assert problem_kind("range-unsupported") is Problem.RANGE_UNSUPPORTED
    assert most_blocking([(Problem.TRACKER_UNREACHABLE, "a"), (Problem.RANGE_UNSUPPORTED, "b")]) == (Problem.RANGE_UNSUPPORTED, "b")
    assert most_blocking([]) is None
