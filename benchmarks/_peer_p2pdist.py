"""One p2pdist peer for benchmarks/transfer_speed.py (a separate process so CPU is its own).

seed:  verify DATA_DIR, print {"port": N}, serve until a line arrives on stdin, print CPU used.
leech: download from --peer into DATA_DIR (or null storage), print elapsed and CPU used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path

from p2pdist.engine.runtime import run
from p2pdist.engine.session import Session
from p2pdist.engine.settings import EngineSettings
from p2pdist.metainfo import read_metainfo
from p2pdist.storage.files import FileStorage
from p2pdist.storage.memory import NullStorage


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sys_cpu() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


async def main(args: argparse.Namespace) -> None:
    meta = read_metainfo(args.torrent)
    session = Session(EngineSettings(listen_host="127.0.0.1", listen_port=0))
    await session.start()
    if args.role == "seed":
        torrent = await session.add_torrent(meta, FileStorage(meta.info, Path(args.data)))
        assert torrent.completed.is_set(), "seed data does not verify"
        print(json.dumps({"port": session.port}), flush=True)
        start = cpu()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        print(json.dumps({"cpu": cpu() - start, "uploaded": torrent.upload_meter.total}), flush=True)
    else:
        storage = NullStorage(meta.info) if args.null else FileStorage(meta.info, Path(args.data))
        start_cpu, start_sys, start = cpu(), sys_cpu(), time.perf_counter()
        torrent = await session.add_torrent(meta, storage)
        torrent.add_peer_addresses([("127.0.0.1", args.peer)])
        await torrent.completed.wait()
        done = time.monotonic()
        elapsed = time.perf_counter() - start
        print(json.dumps({"elapsed": elapsed, "transfer": done - (torrent.first_block_at or done), "cpu": cpu() - start_cpu, "sys": sys_cpu() - start_sys, "wasted": torrent.bytes_wasted, "hash_failures": torrent.hash_failures}), flush=True)
    await session.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["seed", "leech"])
    parser.add_argument("torrent")
    parser.add_argument("data")
    parser.add_argument("--peer", type=int, default=0)
    parser.add_argument("--null", action="store_true")
    run(main(parser.parse_args()))
