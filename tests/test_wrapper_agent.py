"""End to end with the real agent: site server, seeder, agent daemon, wrapper processes, SMS simulator.

The SMS client simulator runs ``p2pdist-wrapper`` until the agent has the package; the command
then runs from the agent's cache under a lease, and while it runs the agent refuses to remove
the package. A package damaged on disk is not run: the wrapper asks SMS to retry while the agent
repairs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from p2pdist.control.client import ControlClient
from p2pdist.agent.daemon import Agent
from p2pdist.wrapper.smsim import Result, simulate
from tests.support.agents import (
    agent_settings,
    make_package,
    Package,
    publish,
    read_package,
    running_agent,
    seeder,
    site_server,
    socket_dir,
)

PKG = "PS100012"

# The "installer": records where it ran and what it saw, tries to remove its own package through
# the control API (which must refuse while the lease is held) and exits with the code it is given.
# argv: control address, exit code, record file, then the installer's own arguments.
COMMAND = """
import asyncio, json, os, sys, time
from p2pdist.control.client import ControlClient
from p2pdist.control.schema import ControlError

async def try_remove():
    try:
        await ControlClient(sys.argv[1]).remove("PS100012")
    except ControlError as exc:
        return exc.status
    return "removed"

record = {"cwd": os.getcwd(), "files": sorted(os.listdir(".")), "argv": sys.argv[4:],
          "remove": asyncio.run(try_remove()), "start": time.time()}
time.sleep(float(os.environ.get("COMMAND_SLEEP", "0")))
record["end"] = time.time()
with open(sys.argv[3], "w") as out:
    json.dump(record, out)
sys.exit(int(sys.argv[2]))
"""


@dataclass
class Setup:
    agent: Agent
    client: ControlClient
    address: str
    package: Package
    tmp_path: Path

    def argv(self, code: int, record: Path, *args: str) -> list[str]:
        script = self.tmp_path / "command.py"
        script.write_text(COMMAND)
        return [sys.executable, "-m", "p2pdist.wrapper", "--agent", self.address, "--pkg", PKG, "--version", "2",
                sys.executable, str(script), self.address, str(code), str(record), *args]  # fmt: skip

    async def sms(self, argv: list[str], max_attempts: int = 60, **env: str) -> Result:
        full_env = {**os.environ, "P2PDIST_WRAPPER_LOG": str(self.tmp_path / "wrapper.log"), **env}
        return await simulate(argv, retry_codes=[1618], interval=0.3, max_attempts=max_attempts, env=full_env, quiet=True)

    def log(self) -> list[str]:
        return (self.tmp_path / "wrapper.log").read_text().splitlines()


@contextlib.asynccontextmanager
async def real_agent(tmp_path: Path) -> AsyncIterator[Setup]:
    async with site_server(tmp_path / "server") as server:
        package = make_package(PKG, 2, 300_000, announce=server.url + "/announce")
        await publish(server, package.torrent)
        with socket_dir() as sockets:
            async with seeder(tmp_path / "seed", [package]):
                settings = agent_settings(tmp_path, 1, server.url, sockets)
                async with running_agent(settings) as (agent, client):
                    yield Setup(agent, client, f"unix:{settings.control.socket_path}", package, tmp_path)


async def test_wrapper_runs_from_the_real_agents_cache(tmp_path: Path) -> None:
    async with real_agent(tmp_path) as setup:
        record = tmp_path / "record.json"
        result = await setup.sms(setup.argv(1641, record, "/qn", "a b"))
        assert setup.agent.leases == {}  # released by the wrapper, not only dropped as its process ended
        status = await setup.client.status(PKG)
    assert result.outcome == "success", result.to_json()
    assert result.exit_code == 1641 & 0xFF
    assert all(attempt.exit_code == 1618 & 0xFF for attempt in result.attempts[:-1])
    seen = json.loads(record.read_text())
    assert status.state == "complete" and seen["cwd"] == status.path
    assert seen["files"] == ["data", "setup.exe"]
    assert seen["argv"] == ["/qn", "a b"]
    assert seen["remove"] == 409  # in use by the running command: never removed under it
    assert read_package(Path(status.path), setup.package) == setup.package.data
    lines = setup.log()
    assert len(lines) == len(result.attempts)
    assert "outcome=ran exit=105 " in lines[-1]  # 1641 as a POSIX exit status


async def test_damaged_package_is_repaired_before_it_runs_and_two_wrappers_share_it(tmp_path: Path) -> None:
    async with real_agent(tmp_path) as setup:
        first = await setup.sms(setup.argv(0, tmp_path / "first.json"))
        assert first.outcome == "success"
        path = Path((await setup.client.status(PKG)).path or "")
        damaged = path / "data" / "payload.bin"
        body = bytearray(damaged.read_bytes())
        body[1000] ^= 0xFF
        damaged.write_bytes(bytes(body))

        again = await setup.sms(setup.argv(0, tmp_path / "again.json"), max_attempts=1)
        assert again.outcome == "gave-up" and again.exit_code == 1618 & 0xFF
        assert "failed re-verification" in setup.log()[-1]
        assert not (tmp_path / "again.json").exists()

        both = await asyncio.gather(
            setup.sms(setup.argv(3010, tmp_path / "a.json", "A"), COMMAND_SLEEP="0.5"),
            setup.sms(setup.argv(0, tmp_path / "b.json", "B"), COMMAND_SLEEP="0.5"),
        )
        assert setup.agent.leases == {}
        status = await setup.client.status(PKG)
    assert [r.exit_code for r in both] == [3010 & 0xFF, 0] and all(r.succeeded for r in both)
    assert read_package(Path(status.path or ""), setup.package) == setup.package.data  # repaired
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("a.json", "b.json"))
    assert (a["argv"], b["argv"]) == (["A"], ["B"])
    assert a["cwd"] == b["cwd"] == status.path
    assert a["remove"] == b["remove"] == 409
