"""What an agent costs while it seeds many packages and nobody asks for them.

A site server (a process on 127.0.0.1) has N small signed packages published; an agent (a
process) holds all N complete in its cache, laid out beforehand as a finished download leaves
them (torrent, database row, data); no other peer exists. Once every package is complete and
the first announces are answered, the script samples the agent for ``--seconds``: CPU (user +
system, from /proc), resident memory, and wake-ups (context switches of all its threads).

    .venv/bin/python benchmarks/idle_cost.py [--packages 1000] [--seconds 120]

Prints one result line on stdout and writes benchmarks/results/idle_cost.json. Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from p2pdist import bencode
from p2pdist.control.client import ControlClient
from p2pdist.config import toml_value
from p2pdist.agent.state import AgentState, PackageRow
from p2pdist.agent.torrent_source import vouch_for
from p2pdist.metainfo import PackageIdentity, encode_torrent, parse_metainfo
from p2pdist.metainfo.signing import generate_key, raw_public_key, sign_torrent
from _net import free_port, wait_listening

RESULTS = Path(__file__).parent / "results"
PIECE = 16 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total += int(line.split()[1])
        except OSError:
            pass  # a thread that just ended
    return total


def make_packages(count: int, announce: str, key, work: Path) -> list[tuple[bytes, bytes, str]]:  # type: ignore[no-untyped-def]
    """(signed torrent, payload, name) per package; payloads are 16 KiB, seeded by their index."""
    packages = []
    for n in range(count):
        payload = hashlib.sha256(b"%d" % n).digest() * (PIECE // 32)
        name = f"P{n:05d}.bin"
        info = {
            b"length": len(payload),
            b"name": name.encode(),
            b"p2pdist": PackageIdentity(f"PS1{n:05X}", 1).to_bencode(),
            b"piece length": PIECE,
            b"pieces": hashlib.sha1(payload).digest(),
            b"private": 1,
        }
        unsigned = encode_torrent(bencode.encode(info), trackers=((announce,),))
        packages.append((sign_torrent(parse_metainfo(unsigned), key), payload, name))
    return packages


async def publish_all(url: str, token: str, torrents: list[bytes]) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for torrent in torrents:
            async with http.post(url + "/api/packages", data=torrent, headers={"Authorization": f"Bearer {token}"}) as reply:
                if reply.status not in (200, 201):
                    raise SystemExit(f"publish refused: {reply.status} {await reply.text()}")


def lay_out_cache(packages: list[tuple[bytes, bytes, str]], cache: Path, state_dir: Path) -> None:
    """What a finished download leaves: the data under its final name, the torrent (with the
    record that the agent checked its signature when it stored it), the row."""
    state = AgentState(state_dir)
    now = time.time()
    try:
        for torrent, payload, name in packages:
            meta = parse_metainfo(torrent)
            key = meta.info_hash_hex
            (cache / key).mkdir(parents=True)
            (cache / key / name).write_bytes(payload)
            identity = meta.info.package
            assert identity is not None
            state.save_torrent(key, torrent, vouch_for(torrent, meta))
            state.save_package(
                PackageRow(key, identity.package_id, 1, name, len(payload), state="complete", added_at=now, last_advertised=now, completed_at=now)
            )
    finally:
        state.close()


async def wait_all_complete(client: ControlClient, count: int, timeout: float) -> float:
    started = time.monotonic()
    while True:
        listed = await client.list()
        if sum(s.state == "complete" for s in listed) >= count:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise SystemExit(f"only {sum(s.state == 'complete' for s in listed)} of {count} complete after {timeout} s")
        await asyncio.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--settle", type=float, default=15.0, help="seconds after start-up before sampling")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="p2pdist-idle-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        key = generate_key()
        public = raw_public_key(key.public_key()).hex()
        token = secrets.token_hex(16)
        server_port, control_port = free_port(), free_port()
        server_url = f"http://127.0.0.1:{server_port}"
        (work / "site.toml").write_text(
            f"data_dir = {toml_value(work / 'server')}\nadmin_token = {toml_value(token)}\npublic_keys = [{toml_value(public)}]\n"
            f'[listen]\nhost = "127.0.0.1"\nport = {server_port}\n[limits]\nannounce_rate = 0\n'
            '[[sites]]\nname = "HQ"\nsubnets = ["127.0.0.0/8"]\n'
        )
        processes.append(subprocess.Popen([sys.executable, "-m", "p2pdist.tracker", "--config", str(work / "site.toml")], stderr=subprocess.DEVNULL))
        wait_listening(server_port)
        packages = make_packages(args.packages, server_url + "/announce", key, work)
        asyncio.run(publish_all(server_url, token, [torrent for torrent, _, _ in packages]))
        lay_out_cache(packages, work / "cache", work / "state")
        (work / "agent.toml").write_text(
            f"repository = {toml_value(server_url)}\npublic_keys = [{toml_value(public)}]\ncache_dir = {toml_value(work / 'cache')}\n"
            f"state_dir = {toml_value(work / 'state')}\nlog_file = {toml_value(work / 'agent.log')}\nlog_level = \"warning\"\n"
            '[engine]\nlisten_host = "127.0.0.2"\nbind_host = "127.0.0.2"\n'
            f'[control]\naddress = "http://127.0.0.1:{control_port}"\ntoken_file = {toml_value(work / "control.token")}\n'
        )
        agent = subprocess.Popen([sys.executable, "-m", "p2pdist.agent", "--config", str(work / "agent.toml")], stderr=subprocess.DEVNULL)
        processes.append(agent)
        wait_listening(control_port)

        async def ready() -> float:
            async with ControlClient(f"http://127.0.0.1:{control_port}", token_file=str(work / "control.token"), timeout=60) as client:
                return await wait_all_complete(client, args.packages, timeout=600)

        startup = asyncio.run(ready())
        time.sleep(args.settle)
        cpu0, switches0, t0 = cpu_seconds(agent.pid), switches(agent.pid), time.monotonic()
        time.sleep(args.seconds)
        cpu1, switches1, t1 = cpu_seconds(agent.pid), switches(agent.pid), time.monotonic()
        elapsed = t1 - t0
        result = {
            "packages": args.packages,
            "seconds": round(elapsed, 1),
            "cpu_percent": round(100 * (cpu1 - cpu0) / elapsed, 3),
            "rss_mib": round(rss_mib(agent.pid), 1),
            "wakeups_per_s": round((switches1 - switches0) / elapsed, 1),
            "startup_s": round(startup, 1),
        }
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "idle_cost.json").write_text(json.dumps(result, indent=2))
        print(
            f"idle agent with {args.packages} packages over {elapsed:.0f} s: {result['cpu_percent']}% of a core, "
            f"{result['rss_mib']} MiB, {result['wakeups_per_s']} wake-ups/s (all complete {startup:.1f} s after start)"
        )
        return 0
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
