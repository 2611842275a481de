"""The three ways to get the package to every PC, each measured the same way.

- ``p2pdist``: a real agent per PC, and SMS (the client simulator) running the wrapper line
  ``p2pdist-wrapper --pkg PS100001 <python> install.py`` until it stops answering 1618.
- ``http``: every PC pulls the whole package from the distribution point (SMS/BITS without
  peer caching): the baseline for WAN bytes.
- ``libtorrent``: one stock libtorrent client per PC with the same tracker and web seed.

Each returns a dict: per-client times (seconds after t0) and byte sources, the WAN bytes per
branch, the DP's bytes per client, and a timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.branch.harness import DP_PORT, HERE, PACKAGE_ID, Harness, Sampler
from benchmarks.branch.procs import Proc
from benchmarks.branch.topology import HQ_ADDRESS, Client
from p2pdist.control.client import ControlClient
from p2pdist.control.schema import AgentUnavailable, ControlError, PackageStatus
from p2pdist.wrapper.smsim import simulate
from p2pdist.config import toml_value

_COMPLETE_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*: download complete")


def _client_row(client: Client) -> dict[str, Any]:
    return {"client": client.name, "branch": f"branch-{client.branch}", "address": client.address}


def _finish(harness: Harness, rows: list[dict[str, Any]], before: dict[str, Any], dp_stats: dict[str, int]) -> dict[str, Any]:
    after = harness.wan_counters()
    wan = Harness.counter_delta(after, before)
    for row in rows:
        row["dp_bytes"] = dp_stats.get(row["address"], 0)
    return {"clients": rows, "wan": wan, "dp_bytes_total": sum(dp_stats.values()), "dp_stats": dp_stats}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cpu_split(clients: list[Proc], hq: list[Proc], children_before: float) -> dict[str, float]:
    """CPU seconds since t0 of the client processes, HQ's, this driver and its finished children.

    Finished children are the SMS simulator's wrapper runs (and installers): the cost of
    emulating every PC on one machine's two cores, which real PCs do not share.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "clients": round(sum(p.cpu_seconds() or 0.0 for p in clients), 2),
        "hq": round(sum(p.cpu_seconds() or 0.0 for p in hq), 2),
        "finished_children": round(_children_cpu() - children_before, 2),
        "driver_total": round(own.ru_utime + own.ru_stime, 2),
    }


async def _go(harness: Harness, client: Client, action: Any) -> Any:
    await asyncio.sleep(harness.offsets[client.name])
    return await action()


# -- p2pdist -------------------------------------------------------------------------------------


def _agent_toml(harness: Harness, client: Client, home: Path) -> str:
    tun = harness.options.tunables
    return (
        f'repository = "http://{HQ_ADDRESS}:6969"\n'
        f"public_keys = [{toml_value(harness.key_hex)}]\n"
        f"cache_dir = {toml_value(home / 'cache')}\n"
        f"state_dir = {toml_value(home / 'state')}\n"
        f"log_file = {toml_value(home / 'agent.log')}\n"
        f"web_seed_grace = {tun.web_seed_grace}\n"
        "report_interval = 5.0\n"
        f"{tun.extra_agent_toml}"
        "[engine]\n"
        f'listen_host = "{client.address}"\nlisten_port = 6881\nbind_host = "{client.address}"\n'
        f"tick_interval = {tun.tick_interval}\nchoke_interval = {tun.choke_interval}\nupload_slots = {tun.upload_slots}\n"
        "[control]\n"
        f"address = {toml_value('unix:' + str(home / 'control.sock'))}\n"
    )


async def _status(sock: Path) -> PackageStatus | None:
    with contextlib.suppress(AgentUnavailable, ControlError, OSError, asyncio.TimeoutError):
        async with ControlClient(f"unix:{sock}", timeout=5.0) as client:
            return await client.status(PACKAGE_ID)
    return None


async def _wait_agent(proc: Proc, sock: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.process.returncode is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.process.returncode} (see {proc.log})")
        with contextlib.suppress(AgentUnavailable, ControlError, OSError):
            async with ControlClient(f"unix:{sock}", timeout=2.0) as client:
                await client.list()
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.name} did not answer on {sock} within {timeout:g} s")
        await asyncio.sleep(0.2)


def completion_time(log: Path) -> float | None:
    """Wall-clock time of the agent's 'download complete' log line (millisecond resolution)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        match = _COMPLETE_LINE.match(line)
        if match:
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
            return stamp + int(match.group(2)) / 1000
    return None


async def run_p2pdist(harness: Harness, bound_s: float) -> dict[str, Any]:
    tag = "p2pdist"
    folder = harness.work / tag
    hq_procs, stats = await harness.start_hq(tag, tracker=True)
    clients = harness.topo.clients
    homes = {c.name: folder / c.name for c in clients}
    agents: list[Proc] = []
    try:
        for client in clients:
            home = homes[client.name]
            home.mkdir(parents=True)
            (home / "agent.toml").write_text(_agent_toml(harness, client, home))
            argv = harness.net.exec_argv(client.namespace, [harness.python, "-m", "p2pdist.agent", "--config", str(home / "agent.toml")])
            agents.append(await harness.procs.spawn(f"{tag}-agent-{client.name}", argv, env=harness.env))
        await asyncio.gather(*(_wait_agent(proc, homes[c.name] / "control.sock") for proc, c in zip(agents, clients)))
        verified_seen: dict[str, float] = {}
        latest: dict[str, PackageStatus] = {}

        async def poll() -> dict[str, Any]:
            statuses = await asyncio.gather(*(_status(homes[c.name] / "control.sock") for c in clients))
            now = time.time()
            progress = {}
            for client, status in zip(clients, statuses):
                if status is None:
                    continue
                latest[client.name] = status
                progress[client.name] = round(status.progress, 4)
                if status.state == "complete" and client.name not in verified_seen:
                    verified_seen[client.name] = now
            return {"progress": progress}

        before = harness.wan_counters()
        children_before = _children_cpu()
        t0 = time.time()
        sampler = Sampler(harness, t0, poll)
        sampler.start()

        async def sms(client: Client) -> Any:
            home = homes[client.name]
            argv = harness.net.exec_argv(client.namespace, [
                harness.python, "-m", "p2pdist.wrapper", "--pkg", PACKAGE_ID, "--agent", f"unix:{home / 'control.sock'}",
                "--log", str(home / "wrapper.log"), harness.python, "install.py", "--receipt", str(home / "receipt.json"),
            ])  # fmt: skip
            interval = harness.options.retry_interval
            attempts = int(harness.timeout_for(bound_s) / max(interval, 0.5)) + 2
            return await simulate(argv, interval=interval, max_attempts=attempts, quiet=True, max_run_time=120.0, env=harness.env, cwd=str(harness.work))

        timeout = harness.timeout_for(bound_s)
        timed_out = False
        tasks = [asyncio.ensure_future(_go(harness, c, lambda c=c: sms(c))) for c in clients]
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            timed_out = True
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await sampler.stop()
        await poll()
        rows = []
        for client, task in zip(clients, tasks):
            row = _client_row(client)
            result = task.result() if task in done and task.exception() is None else None
            status = latest.get(client.name)
            logged = completion_time(homes[client.name] / "agent.log")
            verified = logged if logged is not None else verified_seen.get(client.name)
            row.update(
                start_s=round(harness.offsets[client.name], 3),
                verified_s=round(verified - t0, 3) if verified else None,
                installed_s=round(result.end - t0, 3) if result and result.succeeded else None,
                outcome=result.outcome if result else "timeout",
                sms_runs=len(result.attempts) if result else None,
                from_peers=status.bytes_from_peers if status else 0,
                from_webseed=status.bytes_from_webseed if status else 0,
                uploaded=status.uploaded if status else 0,
                receipt=(homes[client.name] / "receipt.json").exists(),
            )
            rows.append(row)
        for row, proc in zip(rows, agents):
            row["cpu_s"] = proc.cpu_seconds()
        cpu = _cpu_split(agents, hq_procs, children_before)
        await harness.procs.stop(agents)
        agents = []
        await harness.procs.stop(hq_procs)
        hq_procs = []
        result = _finish(harness, rows, before, Harness.read_dp_stats(stats))
        result.update(timeline=sampler.rows, timed_out=timed_out, timeout_s=timeout, cpu_s=cpu)
        return result
    finally:
        await harness.procs.stop(agents + hq_procs)


# -- HTTP only -------------------------------------------------------------------------------------


async def run_http(harness: Harness, bound_s: float) -> dict[str, Any]:
    tag = "http"
    folder = harness.work / tag
    hq_procs, stats = await harness.start_hq(tag, tracker=False)
    clients = harness.topo.clients
    getters: list[Proc] = []
    try:
        base = f"http://{HQ_ADDRESS}:{DP_PORT}/"
        for client in clients:
            argv = harness.net.exec_argv(client.namespace, [
                harness.python, str(HERE / "http_get.py"), base, str(folder / client.name), *harness.package_files,
            ])  # fmt: skip
            getters.append(await harness.procs.spawn(f"{tag}-{client.name}", argv, pipe=True))
        await asyncio.gather(*(proc.expect("ready", 30.0) for proc in getters))
        before = harness.wan_counters()
        t0 = time.time()
        sampler = Sampler(harness, t0)
        sampler.start()
        timeout = harness.timeout_for(bound_s, factor=1.5)

        async def get(proc: Proc) -> dict[str, Any]:
            proc.send("go\n")
            return await proc.expect("done", timeout)

        tasks = [asyncio.ensure_future(_go(harness, c, lambda p=p: get(p))) for c, p in zip(clients, getters)]
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await sampler.stop()
        rows = []
        for client, task in zip(clients, tasks):
            row = _client_row(client)
            answer = task.result() if task in done and task.exception() is None else None
            seconds = round(answer["done"] - t0, 3) if answer else None
            row.update(start_s=round(harness.offsets[client.name], 3), verified_s=seconds, installed_s=seconds,
                       outcome="success" if answer else "timeout", from_peers=0, from_webseed=answer["bytes"] if answer else 0)  # fmt: skip
            rows.append(row)
        await harness.procs.stop(getters)
        getters = []
        await harness.procs.stop(hq_procs)
        hq_procs = []
        result = _finish(harness, rows, before, Harness.read_dp_stats(stats))
        result.update(timeline=sampler.rows, timed_out=bool(pending), timeout_s=timeout)
        return result
    finally:
        await harness.procs.stop(getters + hq_procs)


# -- libtorrent ----------------------------------------------------------------------------------


async def run_libtorrent(harness: Harness, bound_s: float) -> dict[str, Any]:
    tag = "libtorrent"
    folder = harness.work / tag
    hq_procs, stats = await harness.start_hq(tag, tracker=True)
    clients = harness.topo.clients
    peers: list[Proc] = []
    try:
        for client in clients:
            save = folder / client.name
            save.mkdir(parents=True)
            argv = harness.net.exec_argv(client.namespace, [
                harness.python, str(HERE / "lt_client.py"), str(harness.torrent), str(save), client.address,
            ])  # fmt: skip
            peers.append(await harness.procs.spawn(f"{tag}-{client.name}", argv, pipe=True))
        await asyncio.gather(*(proc.expect("ready", 30.0) for proc in peers))
        progress: dict[str, float] = {}

        async def sample() -> dict[str, Any]:
            return {"progress": dict(progress)}

        before = harness.wan_counters()
        children_before = _children_cpu()
        t0 = time.time()
        sampler = Sampler(harness, t0, sample)
        sampler.start()
        timeout = harness.timeout_for(bound_s)

        async def fetch(client: Client, proc: Proc) -> dict[str, Any]:
            proc.send("go\n")
            deadline = time.monotonic() + timeout
            while True:
                line = await _next_line(proc, deadline)
                if "progress" in line:
                    progress[client.name] = round(line["progress"], 4)
                if "done" in line:
                    progress[client.name] = 1.0
                    return line

        tasks = [asyncio.ensure_future(_go(harness, c, lambda c=c, p=p: fetch(c, p))) for c, p in zip(clients, peers)]
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await sampler.stop()
        finals: dict[str, dict[str, Any]] = {}
        for client, proc in zip(clients, peers):
            proc.send("stop\n")
        for client, proc in zip(clients, peers):
            with contextlib.suppress(TimeoutError, RuntimeError):
                finals[client.name] = await proc.expect("final", 10.0)
        rows = []
        for client, task in zip(clients, tasks):
            row = _client_row(client)
            answer = task.result() if task in done and task.exception() is None else None
            seconds = round(answer["done"] - t0, 3) if answer else None
            final = finals.get(client.name, {})
            row.update(start_s=round(harness.offsets[client.name], 3), verified_s=seconds, installed_s=seconds,
                       outcome="success" if answer else "timeout", downloaded=final.get("downloaded", 0),
                       uploaded=final.get("uploaded", 0))  # fmt: skip
            rows.append(row)
        for row, proc in zip(rows, peers):
            row["cpu_s"] = proc.cpu_seconds()
        cpu = _cpu_split(peers, hq_procs, children_before)
        await harness.procs.stop(peers)
        peers = []
        await harness.procs.stop(hq_procs)
        hq_procs = []
        result = _finish(harness, rows, before, Harness.read_dp_stats(stats))
        for row in result["clients"]:
            row["from_webseed"] = row["dp_bytes"]
            row["from_peers"] = max(0, row.pop("downloaded") - row["dp_bytes"])
        result.update(timeline=sampler.rows, timed_out=bool(pending), timeout_s=timeout, cpu_s=cpu)
        return result
    finally:
        await harness.procs.stop(peers + hq_procs)


async def _next_line(proc: Proc, deadline: float) -> dict[str, Any]:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"{proc.name}: timed out")
    return await asyncio.wait_for(proc.lines.get(), left)


APPROACHES = {"p2pdist": run_p2pdist, "http": run_http, "libtorrent": run_libtorrent}
