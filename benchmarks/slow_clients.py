"""Announce latency of the site server while slow clients hold 2000 sockets against it.

A holder process keeps ``--slow`` connections going from ``--addresses`` source addresses
(127.77.0.1, ...), each sending an announce head one byte every ``--trickle`` seconds and never
finishing it. When the server closes one (or refuses it at accept), the holder opens another
after ``--reopen`` seconds, so the pressure stays the same for the whole run. Once every slot
has been opened once, the measurer announces at ``--rate`` per second for ``--seconds`` from 16
other addresses, one new connection per announce, each with ``--timeout`` seconds to get its
whole reply. An announce that fails or times out is an error and counts as ``--timeout`` in the
percentiles, so p99 cannot look good by leaving failures out.

The server runs as ``p2pdist server`` does (uvloop, memory store; rate limits off so the
measurer's own announces are never refused) and starts the way systemd starts a service by
default: soft RLIMIT_NOFILE ``--nofile`` (1024), hard limit unchanged. Its open descriptors are
sampled every second from /proc.

    .venv/bin/python benchmarks/slow_clients.py [--slow 2000] [--addresses 10] [--seconds 30]

Prints one line and writes benchmarks/results/slow_clients.json (``--out`` to choose).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote_from_bytes

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2pdist import bencode
from p2pdist.config import toml_value
from p2pdist.metainfo import PackageIdentity, encode_torrent, parse_metainfo
from p2pdist.metainfo.signing import generate_key, raw_public_key, sign_torrent
from _net import free_port

MAX_SECONDS = 240  # hard bound on the whole run
HOLD_BASE, MEASURE_BASE = "127.77.0.", "127.88.0."
MEASURE_ADDRESSES = 16
TOKEN = "bench-admin-token"


def open_fds(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return -1


def make_torrent(announce: str, seed: int) -> tuple[bytes, str]:
    rng = random.Random(seed)
    key = generate_key()
    info = {
        b"length": 16384,
        b"name": b"slow.bin",
        b"p2pdist": PackageIdentity("BMS00001", 1).to_bencode(),
        b"piece length": 16384,
        b"pieces": rng.randbytes(20),
        b"private": 1,
    }
    unsigned = encode_torrent(bencode.encode(info), trackers=((announce,),))
    return sign_torrent(parse_metainfo(unsigned), key), raw_public_key(key.public_key()).hex()


def announce_head(info_hash: bytes, number: int, port: int) -> bytes:
    peer_id = b"-BS0001-%012d" % number
    target = (f"/announce?info_hash={quote_from_bytes(info_hash, safe='')}&peer_id={quote_from_bytes(peer_id, safe='')}"
              f"&port={port}&uploaded=0&downloaded=0&left=16384&compact=1&numwant=50")  # fmt: skip
    return f"GET {target} HTTP/1.1\r\nHost: tracker\r\nConnection: close\r\n\r\n".encode()


# ------------------------------------------------------------------------------------ holder


async def hold(port: int, slots: int, addresses: int, trickle: float, reopen: float, seconds: float,
               stats_file: Path) -> None:  # fmt: skip
    """Keep ``slots`` trickling connections going until killed or ``seconds`` pass."""
    head = announce_head(b"\x01" * 20, 0, 1)[:-4]  # never ends
    stats = {"opened": 0, "failed": 0, "live": 0, "live_max": 0}
    started = 0
    ready = asyncio.Event()

    async def slot(number: int) -> None:
        nonlocal started
        source = HOLD_BASE + str(1 + number % addresses)
        first = True
        while True:
            writer = None
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
                stats["opened"] += 1
                stats["live"] += 1
                stats["live_max"] = max(stats["live_max"], stats["live"])
                try:
                    for i in range(len(head)):
                        writer.write(head[i : i + 1])
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(trickle):
                                if not await reader.read(1):
                                    break  # the server closed it
                finally:
                    stats["live"] -= 1
            except OSError:
                stats["failed"] += 1  # refused, reset or timed out
            finally:
                if writer is not None:
                    writer.close()
                if first:
                    first = False
                    started += 1
                    if started >= slots:
                        ready.set()
            await asyncio.sleep(reopen)

    async def opened_once(number: int) -> None:
        await asyncio.sleep(number / 500)  # ramp at 500 connections a second
        await slot(number)

    tasks = [asyncio.create_task(opened_once(n)) for n in range(slots)]

    async def report() -> None:
        while True:
            stats_file.write_text(json.dumps(stats))
            await asyncio.sleep(1)

    # "ready" once every slot has been opened once: ready when its first try ends or after the ramp
    async def ramped() -> None:
        await asyncio.sleep(slots / 500 + 2)
        ready.set()

    tasks += [asyncio.create_task(report()), asyncio.create_task(ramped())]
    await ready.wait()
    print("READY", flush=True)
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()


# ---------------------------------------------------------------------------------- measurer


async def measure(port: int, info_hash: bytes, rate: float, seconds: float, timeout: float, seed: int,
                  server_pid: int) -> dict[str, object]:  # fmt: skip
    rng = random.Random(seed)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    fds: list[int] = []

    async def one(number: int) -> None:
        source = MEASURE_BASE + str(1 + number % MEASURE_ADDRESSES)
        began = time.monotonic()
        writer = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
                writer.write(announce_head(info_hash, rng.randrange(10**9), 20000 + number % 1000))
                reply = await reader.read()
            if not reply.startswith(b"HTTP/1.1 200") or b"8:interval" not in reply:
                raise ConnectionError("not an announce reply")
            latencies.append(time.monotonic() - began)
        except TimeoutError:
            errors["timeout"] = errors.get("timeout", 0) + 1
            latencies.append(timeout)
        except (OSError, ConnectionError) as exc:
            name = type(exc).__name__
            errors[name] = errors.get(name, 0) + 1
            latencies.append(timeout)
        finally:
            if writer is not None:
                writer.close()

    async def sample() -> None:
        while True:
            fds.append(open_fds(server_pid))
            await asyncio.sleep(1)

    sampler = asyncio.create_task(sample())
    tasks = []
    began = time.monotonic()
    total = int(rate * seconds)
    for number in range(total):
        delay = began + number / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(number)))
    await asyncio.gather(*tasks)
    sampler.cancel()
    ordered = sorted(latencies)
    return {
        "announces": total,
        "ok": total - sum(errors.values()),
        "errors": errors,
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "server_fds": {"min": min(fds), "max": max(fds), "samples": fds},
    }


# -------------------------------------------------------------------------------------- main


def start_server(work: Path, port: int, public_hex: str, nofile: int) -> subprocess.Popen[bytes]:
    config = work / "site.toml"
    config.write_text(
        f"data_dir = {toml_value(work / 'data')}\npublic_keys = [{toml_value(public_hex)}]\nadmin_token = {toml_value(TOKEN)}\n"
        f'[listen]\nhost = "127.0.0.1"\nport = {port}\n'
        "[limits]\nannounce_rate = 0.0\n"
        '[[sites]]\nname = "bench"\nsubnets = ["127.0.0.0/8"]\n'
    )
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    def limit() -> None:  # as under systemd's default LimitNOFILE: soft 1024, hard high
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))

    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's code, whatever is installed
    return subprocess.Popen([sys.executable, "-m", "p2pdist.tracker", "--config", str(config)], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=limit,
                            start_new_session=True)  # fmt: skip


def publish(url: str, torrent: bytes) -> None:
    deadline = time.monotonic() + 30
    while True:
        request = urllib.request.Request(url + "/api/packages", data=torrent, method="POST",
                                         headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
        try:
            urllib.request.urlopen(request, timeout=5).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"site server at {url} did not come up")
            time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=2000, help="slow connections the holder keeps going")
    parser.add_argument("--addresses", type=int, default=10, help="source addresses they come from")
    parser.add_argument("--trickle", type=float, default=1.0, help="seconds between two bytes of a slow head")
    parser.add_argument("--reopen", type=float, default=1.0, help="seconds before a closed slow slot reconnects")
    parser.add_argument("--rate", type=float, default=50.0, help="measured announces per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long announces are measured")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds an announce may take")
    parser.add_argument("--nofile", type=int, default=1024, help="the server's soft RLIMIT_NOFILE at start")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "slow_clients.json")
    parser.add_argument("--role", choices=("main", "hold"), default="main", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the clients need their own fds
    if args.role == "hold":
        asyncio.run(hold(args.port, args.slow, args.addresses, args.trickle, args.reopen, MAX_SECONDS, args.out))
        return 0
    if args.seconds + args.slow / 500 + 60 > MAX_SECONDS:
        parser.error(f"the run would exceed {MAX_SECONDS} s")
    with tempfile.TemporaryDirectory(prefix="slow-clients-") as temp:
        work = Path(temp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        torrent, public_hex = make_torrent(url + "/announce", args.seed)
        info_hash = parse_metainfo(torrent).info_hash
        server = start_server(work, port, public_hex, args.nofile)
        holder = None
        try:
            publish(url, torrent)
            baseline = open_fds(server.pid)
            holder = subprocess.Popen(
                [sys.executable, __file__, "--role", "hold", "--port", str(port), "--slow", str(args.slow),
                 "--addresses", str(args.addresses), "--trickle", str(args.trickle), "--reopen", str(args.reopen),
                 "--out", str(work / "holder.json")],
                stdout=subprocess.PIPE, start_new_session=True,
            )  # fmt: skip
            assert holder.stdout is not None
            holder.stdout.readline()  # READY: every slot was opened once
            at_start = json.loads((work / "holder.json").read_text())
            result = asyncio.run(measure(port, info_hash, args.rate, args.seconds, args.timeout, args.seed, server.pid))
            holder_stats = {"when_measuring_began": at_start, "at_the_end": json.loads((work / "holder.json").read_text())}
        finally:
            if holder is not None:
                holder.kill()
                holder.wait(5)
            stop(server)
    summary = {
        "slow_connections": args.slow, "addresses": args.addresses, "trickle_s": args.trickle,
        "reopen_s": args.reopen, "rate": args.rate, "seconds": args.seconds, "timeout_s": args.timeout,
        "server_soft_nofile_at_start": args.nofile, "server_fds_before": baseline, "holder": holder_stats,
        **result,
    }  # fmt: skip
    errors = sum(result["errors"].values())  # type: ignore[union-attr]
    fds = result["server_fds"]
    print(f"slow_clients: {args.slow} slow sockets from {args.addresses} addresses, server soft nofile "
          f"{args.nofile}: announce p50 {result['p50_ms']:.1f}ms p99 {result['p99_ms']:.1f}ms, "
          f"errors {errors}/{result['announces']}, server fds {fds['min']}-{fds['max']}")  # type: ignore[index]  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
