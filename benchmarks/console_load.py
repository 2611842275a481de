"""The site server's memory for 100k agents x 20 packages of console state, and report traffic.

A real ``p2pdist server`` process (uvloop, default limits, the SQLite ledger in a data folder
on disk) gets 20 published packages and 40 sites (127.S.0.0/16). Then 100k agents, each with
its own source address in one of the sites, send their report over HTTP on 127.0.0.1: one POST
of 20 entries built with the agent's own encoder (``agent.reporting``), states and problems in
a fixed mix (60% complete, 25% downloading, 5% checking, 10% with a problem). A second pass
sends every report again, as the hourly refresh does (the same entries: nothing may move).

Memory = the server's RSS after each pass, beside its RSS with the packages published and no
report yet (VmHWM is the peak). The console is read back at the end: ``/api/sites`` must count
100k x 20 PCs x packages, and ``/api/packages/<id>/sites`` is timed.

Traffic per agent per hour, from the bytes actually exchanged (HTTP request and answer, not
counting TCP/IP headers: about 0.5 KB more per connection, as reports are minutes apart and
each opens one): an idle agent sends one full report an hour (``report_refresh``); an agent
whose 20 packages all change sends one every ``report_interval`` (300 s), 12 an hour.

    .venv/bin/python benchmarks/console_load.py [--agents 100000] [--packages 20] [--concurrency 64]

Bounded: every pass stops after --max-seconds (default 1500) whatever it reached, and says so.
Prints one line and writes benchmarks/results/console_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2pdist import bencode
from p2pdist.control.schema import PackageStatus
from p2pdist.agent.reporting import encode, entry_of
from p2pdist.metainfo import PackageIdentity, encode_torrent, parse_metainfo
from p2pdist.metainfo.signing import generate_key, raw_public_key, sign_torrent
from p2pdist.tracker.repository import Repository
from _net import free_port

SERVER_CPU, CLIENT_CPU = 1, 0
SITES = 40
ANNOUNCE_URL = "http://127.0.0.1/announce"
REPORT_INTERVAL, REPORT_REFRESH = 300, 3600  # the agent's defaults (agent/config.py)
PROBLEMS = [
    ("range-unsupported", "http://dp{site:02d}.corp.example/SMSPKG/{pkg}/setup.exe: the web server ignores range requests (answered 200, not 206)"),
    ("disk-full", "cannot write piece 412: cannot write C:\\ProgramData\\p2pdist\\Cache\\...\\data.cab: No space left on device (retrying every 60 s)"),
    ("tracker-unreachable", "https://sms-hq:6969/announce unreachable: cannot connect: Connection refused"),
    ("webseed-refused", "http://dp{site:02d}.corp.example/SMSPKG/{pkg}/setup.exe: HTTP 403"),
]


def memory_kib(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def package_id(n: int) -> str:
    return f"PS1{n:05X}"


def make_torrents(count: int, key, rng: random.Random) -> list[bytes]:
    torrents = []
    for i in range(count):
        info = {
            b"length": 50 << 20, b"name": f"package-{i}".encode(),
            b"p2pdist": PackageIdentity(package_id(i), 1).to_bencode(),
            b"piece length": 4 << 20, b"pieces": rng.randbytes(20 * 13), b"private": 1,
        }  # fmt: skip
        unsigned = encode_torrent(bencode.encode(info), trackers=((ANNOUNCE_URL,),))
        torrents.append(sign_torrent(parse_metainfo(unsigned), key))
    return torrents


def address_of(agent: int) -> tuple[str, int]:
    """(source address, site number) of agent ``agent``: 127.S.x.y with S = 1 + agent % SITES."""
    site = agent % SITES
    n = agent // SITES
    return f"127.{site + 1}.{n // 250}.{n % 250 + 1}", site


def report_body(agent: int, hashes: list[str], seed: int) -> bytes:
    """The agent's report of every package, made the way the agent makes it."""
    rng = random.Random(seed * 1_000_003 + agent)
    _, site = address_of(agent)
    statuses = []
    for n, info_hash in enumerate(hashes):
        draw = rng.random()
        size = 50 << 20
        status = PackageStatus(package_id(n), 1, info_hash, f"package-{n}", "complete", 1.0, size,
                               bytes_from_peers=int(size * 0.9), bytes_from_webseed=size - int(size * 0.9),
                               uploaded=rng.randrange(0, 2 * size), completed_at="2026-03-02T08:00:00Z")  # fmt: skip
        if draw >= 0.6:
            progress = round(rng.random(), 4)
            got = int(size * progress)
            status = PackageStatus(package_id(n), 1, info_hash, f"package-{n}", "downloading", progress, size,
                                   bytes_from_peers=got * 3 // 4, bytes_from_webseed=got - got * 3 // 4)  # fmt: skip
            if draw >= 0.85:
                status = PackageStatus(**{**status.to_json(), "state": "checking"})
            if draw >= 0.9:
                kind, text = PROBLEMS[rng.randrange(len(PROBLEMS))]
                state = "error" if kind == "disk-full" else "downloading"
                status = PackageStatus(**{**status.to_json(), "state": state, "error_kind": kind,
                                          "error": text.format(site=site, pkg=package_id(n))})  # fmt: skip
        statuses.append(status)
    return encode([entry_of(s) for s in statuses])


async def send(port: int, agent: int, body: bytes) -> tuple[int, int, int]:
    """One report from the agent's own address: (HTTP status, request bytes, answer bytes)."""
    source, _ = address_of(agent)
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        head = (
            f"POST /api/report HTTP/1.1\r\nHost: sms-hq:6969\r\nUser-Agent: p2pdist/0.1.0\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        writer.write(head + body)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0
    return status, len(head) + len(body), len(answer)


async def one_pass(port: int, agents: int, hashes: list[str], concurrency: int, seed: int, limit: float) -> dict[str, object]:
    queue = iter(range(agents))
    sent = failed = request_bytes = answer_bytes = 0
    began = time.monotonic()
    deadline = began + limit

    async def worker() -> None:
        nonlocal sent, failed, request_bytes, answer_bytes
        for agent in queue:
            if time.monotonic() > deadline:
                return
            try:
                async with asyncio.timeout(60):
                    status, up, down = await send(port, agent, report_body(agent, hashes, seed))
            except (OSError, TimeoutError, ValueError, IndexError):
                failed += 1
                continue
            if status == 200:
                sent += 1
                request_bytes += up
                answer_bytes += down
            else:
                failed += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.monotonic() - began
    return {"agents": sent, "failed": failed, "seconds": round(seconds, 1), "reports_per_second": round(sent / seconds, 1),
            "request_bytes": request_bytes, "answer_bytes": answer_bytes, "complete": sent + failed == agents}  # fmt: skip


def get_json(url: str) -> tuple[object, float]:
    began = time.monotonic()
    with urllib.request.urlopen(url, timeout=120) as reply:
        value = json.loads(reply.read())
    return value, time.monotonic() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--packages", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-seconds", type=float, default=1500.0, help="bound of each pass")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: a temporary one on disk)")
    args = parser.parse_args()
    if args.agents > 250 * 256 * SITES:
        parser.error(f"at most {250 * 256 * SITES} agents fit the address plan")
    rng = random.Random(args.seed)
    key = generate_key()
    public_hex = raw_public_key(key.public_key()).hex()
    torrents = make_torrents(args.packages, key, rng)
    hashes = [parse_metainfo(t).info_hash_hex for t in torrents]
    with tempfile.TemporaryDirectory(prefix="console-load-", dir=args.data) as temp:
        work = Path(temp)
        data = work / "data"
        repository = Repository(data, (bytes.fromhex(public_hex),))
        for torrent in torrents:
            repository.publish(torrent, time.time(), announce_url=ANNOUNCE_URL)
        repository.close()
        port = free_port()
        sites = "".join(f'[[sites]]\nname = "site-{s:02d}"\nsubnets = ["127.{s + 1}.0.0/16"]\n' for s in range(SITES))
        (work / "site.toml").write_text(
            f'data_dir = "{data}"\npublic_keys = ["{public_hex}"]\n[listen]\nhost = "127.0.0.1"\nport = {port}\n{sites}'
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        server = subprocess.Popen([sys.executable, "-m", "p2pdist.tracker", "--config", str(work / "site.toml")],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
        with contextlib.suppress(OSError):
            os.sched_setaffinity(server.pid, {SERVER_CPU})
            os.sched_setaffinity(0, {CLIENT_CPU})
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(base + "/api/packages", timeout=2).read()
                    break
                time.sleep(0.1)
            else:
                raise SystemExit("console_load: the server did not come up")
            idle = memory_kib(server.pid)
            first = asyncio.run(one_pass(port, args.agents, hashes, args.concurrency, args.seed, args.max_seconds))
            after_first = memory_kib(server.pid)
            again = asyncio.run(one_pass(port, args.agents, hashes, args.concurrency, args.seed, args.max_seconds))
            after_again = memory_kib(server.pid)
            listing, list_seconds = get_json(base + "/api/sites")
            view, view_seconds = get_json(f"{base}/api/packages/{package_id(0)}/sites")
            after_reads = memory_kib(server.pid)
            ledger_bytes = sum(p.stat().st_size for p in data.glob("console.sqlite3*"))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
    counted = listing["totals"]["agents"]  # type: ignore[index]
    per_report = (first["request_bytes"] + first["answer_bytes"]) / max(first["agents"], 1)  # type: ignore[operator]
    summary = {
        "agents": args.agents, "packages": args.packages, "sites": SITES, "concurrency": args.concurrency,
        "passes": {"first": first, "again": again},
        "rss_mib": {"published_no_reports": round(idle["VmRSS"] / 1024, 1), "after_first_pass": round(after_first["VmRSS"] / 1024, 1),
                    "after_second_pass": round(after_again["VmRSS"] / 1024, 1), "after_api_reads": round(after_reads["VmRSS"] / 1024, 1),
                    "peak": round(after_reads["VmHWM"] / 1024, 1)},
        "ledger_file_mib": round(ledger_bytes / 2**20, 1),
        "console_counts_agent_packages": counted, "expected_agent_packages": first["agents"] * args.packages,  # type: ignore[operator]
        "api_seconds": {"sites": round(list_seconds, 3), "package_sites": round(view_seconds, 3)},
        "package_view_sites": len(view["versions"][0]["sites"]),  # type: ignore[index]
        "report_bytes": {"per_full_report": round(per_report), "body": len(report_body(0, hashes, args.seed))},
        "traffic_per_agent_per_hour_bytes": {
            "idle (one refresh)": round(per_report * 3600 / REPORT_REFRESH),
            "all packages changing (every report_interval)": round(per_report * 3600 / REPORT_INTERVAL),
        },
    }  # fmt: skip
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / "console_load.json").write_text(json.dumps(summary, indent=2) + "\n")
    rss = summary["rss_mib"]
    print(
        f"console_load: {first['agents']} agents x {args.packages} packages over {SITES} sites; "
        f"server RSS {rss['published_no_reports']} MiB before reports, {rss['after_first_pass']} after, "  # type: ignore[index]
        f"{rss['after_second_pass']} after the refresh pass (peak {rss['peak']}); "  # type: ignore[index]
        f"{first['reports_per_second']} reports/s; console counts {counted}; "
        f"report {round(per_report)} B, {summary['traffic_per_agent_per_hour_bytes']['idle (one refresh)']} B/agent/h idle, "  # type: ignore[index]
        f"{summary['traffic_per_agent_per_hour_bytes']['all packages changing (every report_interval)']} B/agent/h busy"  # type: ignore[index]
    )
    return 0 if counted == first["agents"] * args.packages and first["complete"] and again["complete"] else 1  # type: ignore[operator]


if __name__ == "__main__":
    sys.exit(main())
