"""``p2pdist doctor`` against a real site server, distribution point and agent on 127.0.0.0/8."""

from __future__ import annotations

import asyncio
import email.utils
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from p2pdist.agent.doctor import Check, clock_check, retry_code_check, run_checks, unpublished_code_check
from p2pdist.engine.settings import EngineSettings
from p2pdist.config import toml_value
from p2pdist.metainfo.signing import generate_key, raw_public_key
from tests.support.agents import PUBLIC_HEX, agent_settings, make_package, publish, running_agent, site_server, socket_dir, write_source
from tests.support.ports import free_port
from tests.support.http import serve_app


def write_config(path: Path, settings, public_key: str = PUBLIC_HEX) -> Path:  # type: ignore[no-untyped-def]
    path.write_text(
        f"repository = {toml_value(settings.repository)}\n"
        f"public_keys = [{toml_value(public_key)}]\n"
        f"cache_dir = {toml_value(str(settings.cache_dir))}\n"
        f"state_dir = {toml_value(str(settings.state_dir))}\n"
        "[engine]\n"
        f"listen_host = {toml_value(settings.engine.listen_host)}\n"
        f"listen_port = {settings.engine.listen_port}\n"
        "[control]\n"
        f"address = {toml_value(settings.control.address)}\n"
    )
    return path


async def distribution_point(root: Path, *, ranges: bool) -> tuple[web.AppRunner, str]:
    """A web share of ``root``; with ``ranges=False`` it answers every GET with the whole file."""
    app = web.Application()
    if ranges:
        app.router.add_static("/", root)
    else:

        async def whole(request: web.Request) -> web.Response:
            return web.Response(body=(root / request.match_info["path"]).read_bytes())

        app.router.add_get("/{path:.+}", whole)
    return await serve_app(app)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name.split(" ")[0]: check for check in checks}


@pytest.mark.parametrize("ranges", [True, False])
async def test_doctor_passes_on_a_healthy_pc_and_names_a_dp_that_ignores_ranges(tmp_path: Path, ranges: bool) -> None:
    async with site_server(tmp_path / "server") as server:
        share = tmp_path / "share"
        share.mkdir()
        runner, dp_url = await distribution_point(share, ranges=ranges)
        try:
            package = make_package("PS100012", 2, 100_000, announce=server.url + "/announce", web_seeds=(dp_url + "/",))
            write_source(share, package)
            await publish(server, package.torrent)
            with socket_dir() as sockets:
                settings = agent_settings(tmp_path, 3, server.url, sockets)
                settings = replace(settings, engine=replace(settings.engine, listen_port=free_port()))
                config = write_config(tmp_path / "agent.toml", settings)
                async with running_agent(settings):
                    checks = await run_checks(config)
        finally:
            await runner.cleanup()
    found = by_name(checks)
    assert list(found) == ["config", "control", "agent", "peer", "site", "clock", "key", "tracker", "web", "retry", "not-published"]
    assert found["agent"].ok and "0 package(s)" in found["agent"].detail  # nothing ensured yet
    assert found["peer"].ok and "running agent" in found["peer"].detail
    assert found["key"].ok and "PS100012 v2" in found["key"].detail
    assert found["tracker"].ok and found["clock"].ok and found["retry"].ok and found["not-published"].ok
    assert found["web"].ok is ranges
    if not ranges:
        assert "ignores Range" in found["web"].detail and "byte ranges" in found["web"].line()
    assert all(check.ok for name, check in found.items() if name != "web")


async def test_doctor_names_each_broken_link(tmp_path: Path) -> None:
    """No agent, a port someone else holds, a key the repository never signed with."""
    async with site_server(tmp_path / "server") as server:
        package = make_package("PS100012", 1, 50_000, announce=server.url + "/announce")
        await publish(server, package.torrent)
        with socket_dir() as sockets:
            settings = agent_settings(tmp_path, 4, server.url, sockets)
            holder = await asyncio.start_server(lambda r, w: w.close(), settings.engine.listen_host, 0)
            port = holder.sockets[0].getsockname()[1]
            settings = replace(settings, engine=EngineSettings(listen_host=settings.engine.listen_host, listen_port=port))
            other_key = raw_public_key(generate_key().public_key()).hex()
            config = write_config(tmp_path / "agent.toml", settings, public_key=other_key)
            try:
                checks = await run_checks(config, retry_code=1603)
            finally:
                holder.close()
                await holder.wait_closed()
    found = by_name(checks)
    assert not found["control"].ok and "start the agent" in found["control"].line()
    assert not found["agent"].ok and "not reachable" in found["agent"].detail
    assert not found["peer"].ok and "engine.listen_port" in found["peer"].line()
    assert found["site"].ok
    assert not found["key"].ok and "not trusted" in found["key"].detail and "repository.pub" in found["key"].fix
    assert "tracker" not in found and "web" not in found  # they need a trusted torrent
    assert not found["retry"].ok and "1603" in found["retry"].detail


async def test_doctor_command_prints_one_line_per_check_and_fails_with_1(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('repository = "http://127.0.0.1:9"\npublic_keys = ["' + PUBLIC_HEX + '"]\n'
                      f"state_dir = {toml_value(str(tmp_path / 'state'))}\n"
                      '[control]\naddress = "http://127.0.0.1:9"\n')  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pdist", "doctor", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    lines = out.decode().splitlines()
    assert process.returncode == 1, err.decode()
    assert lines[-1].endswith("failed") and "Traceback" not in err.decode()
    site = next(line for line in lines if line.startswith("FAIL  site server"))
    assert "unreachable" in site and "-> check `repository`" in site
    assert all(line.startswith(("pass  ", "FAIL  ")) for line in lines[:-1])


def test_clock_skew_over_five_minutes_fails() -> None:
    header = email.utils.formatdate(1_000_000.0, usegmt=True)
    assert clock_check(header, now=lambda: 1_000_010.0).ok
    late = clock_check(header, now=lambda: 1_000_000.0 - 3600)
    assert not late.ok and "3600 s behind" in late.detail and "w32tm" in late.fix
    assert clock_check(None).ok and "not measured" in clock_check("garbage").detail


def test_retry_code_is_checked_against_the_clients_policy_or_the_default_list() -> None:
    assert retry_code_check(1618).ok and "default list" in retry_code_check(1618).detail
    assert not retry_code_check(1603).ok
    policy = retry_code_check(1618, query=lambda: "4\n5\n3010\n")
    assert not policy.ok and "policy" in policy.detail
    assert retry_code_check(4242, query=lambda: "4242, 1618").ok
    assert unpublished_code_check(7705).ok and not unpublished_code_check(1618).ok
    assert "for a week" in unpublished_code_check(1618).detail and "--unpublished-code" in unpublished_code_check(1618).fix
    assert not unpublished_code_check(4242, query=lambda: "4242").ok
