"""Torrent creation speed: p2pdist against mktorrent and libtorrent's v1 creator, same file.

A seeded file (default 1 GiB) in /dev/shm keeps the disk out of the figure; every round runs
the creators back to back in the same order after one untimed start-up of the command (p2pdist
command, p2pdist in-process, mktorrent, libtorrent), so a neighbour's load hits all of them
alike, and the ratios are taken per round. Like is compared with like: the ``p2pdist create``
command (the console script beside this interpreter, as an admin runs it) against the
mktorrent command (both pay process start-up), p2pdist's in-process creator against libtorrent's Python binding
(lt.create_torrent on a file_storage, v1_only, lt.set_piece_hashes). All must produce the same
info-hash (single file, private, same piece size), which the script checks.

    .venv/bin/python benchmarks/create_speed.py [--size 1G] [--rounds 3] [--piece-size auto]

Prints one line per round on stderr, one result line on stdout, and writes
benchmarks/results/create_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from p2pdist.creator.build import TorrentOptions, auto_piece_length, build_torrent, parse_piece_size
from p2pdist.creator.hashing import default_threads
from p2pdist.creator.output import write_atomic
from p2pdist.creator.scan import scan_path
from p2pdist.metainfo import read_metainfo

ANNOUNCE = "http://127.0.0.1/announce"
RESULTS = Path(__file__).resolve().parent / "results" / "create_speed.json"
SEED = 20240601


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def write_seeded(path: Path, size: int) -> None:
    rng = random.Random(SEED)
    block = 16 << 20
    with open(path, "wb") as handle:
        left = size
        while left:
            n = min(block, left)
            handle.write(rng.randbytes(n))
            left -= n


def cpu_seconds() -> float:
    """User + system time of this process (all threads) and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(action: Callable[[], None]) -> tuple[float, float]:
    """Wall seconds and CPU seconds; CPU per byte stays comparable when neighbours load the machine."""
    cpu, start = cpu_seconds(), time.perf_counter()
    action()
    return time.perf_counter() - start, cpu_seconds() - cpu


def run_command(argv: list[str]) -> None:
    # Bytecode caching on, as on an installed system (a shell may have PYTHONDONTWRITEBYTECODE).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    if result.returncode:
        raise SystemExit(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}")


def p2pdist_api(source: Path, out: Path, piece_length: int, threads: int) -> None:
    data, _ = build_torrent(
        scan_path(source), TorrentOptions(trackers=((ANNOUNCE,),), piece_length=piece_length, creation_date=int(time.time())), threads=threads
    )
    write_atomic(out, data)


def libtorrent_v1(source: Path, out: Path, piece_length: int) -> None:
    import libtorrent as lt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        storage = lt.file_storage()
        lt.add_files(storage, str(source))
        creator = lt.create_torrent(storage, piece_length, flags=lt.create_torrent.v1_only)
        creator.add_tracker(ANNOUNCE)
        creator.set_priv(True)
        lt.set_piece_hashes(creator, str(source.parent))
        out.write_bytes(lt.bencode(creator.generate()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G", help="file size (default 1G)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--piece-size", default="auto", help="auto (what p2pdist picks for --size) or e.g. 1M")
    parser.add_argument("--dir", default="/dev/shm", help="where the test file lives (default /dev/shm)")
    args = parser.parse_args()
    size = parse_size(args.size)
    if not 1 <= args.rounds <= 20 or not 1 <= size <= 8 << 30:
        parser.error("--rounds must be 1..20 and --size 1 byte..8G")
    piece_length = auto_piece_length(size) if args.piece_size == "auto" else parse_piece_size(args.piece_size)
    threads = default_threads()
    mktorrent = shutil.which("mktorrent")
    if mktorrent is None:
        raise SystemExit("mktorrent is not installed (Debian package mktorrent)")

    work = Path(tempfile.mkdtemp(prefix="p2pdist-create-speed-", dir=args.dir))
    try:
        source = work / "bench.bin"
        write_seeded(source, size)
        outs = {name: work / f"{name}.torrent" for name in ("cli", "api", "mktorrent", "libtorrent")}
        script = Path(sys.executable).parent / "p2pdist"
        command = [str(script)] if script.exists() else [sys.executable, "-m", "p2pdist"]
        cli = [*command, "create", str(source), "-o", str(outs["cli"]), "-f", "--piece-size", str(piece_length), "-t", ANNOUNCE]
        mk = [mktorrent, "-t", str(threads), "-l", str(piece_length.bit_length() - 1), "-p", "-a", ANNOUNCE,
              "-o", str(outs["mktorrent"]), str(source)]
        warm = [*command, "create", "--help"]
        run_command(warm)  # compiles the bytecode cache once; not timed
        startup = [timed(lambda: run_command(warm)) for _ in range(3)]  # what the create command pays
        rounds = []
        for number in range(1, args.rounds + 1):
            outs["mktorrent"].unlink(missing_ok=True)  # mktorrent refuses to overwrite
            measured = {
                "p2pdist_cli": timed(lambda: run_command(cli)),
                "p2pdist_api": timed(lambda: p2pdist_api(source, outs["api"], piece_length, threads)),
                "mktorrent": timed(lambda: run_command(mk)),
                "libtorrent": timed(lambda: libtorrent_v1(source, outs["libtorrent"], piece_length)),
            }
            speed = {name: size / wall / 1e6 for name, (wall, _) in measured.items()}
            row = {
                "mb_s": {name: round(value) for name, value in speed.items()},
                "cpu_s_per_gib": {name: round(cpu * (1 << 30) / size, 3) for name, (_, cpu) in measured.items()},
                "cli_vs_mktorrent": speed["p2pdist_cli"] / speed["mktorrent"],
                "api_vs_mktorrent": speed["p2pdist_api"] / speed["mktorrent"],
                "api_vs_libtorrent": speed["p2pdist_api"] / speed["libtorrent"],
                "cli_vs_libtorrent": speed["p2pdist_cli"] / speed["libtorrent"],
            }
            rounds.append(row)
            print(
                f"round {number}: " + " ".join(f"{k}={v} MB/s ({row['cpu_s_per_gib'][k]} cpu-s/GiB)" for k, v in row["mb_s"].items())
                + f"  p2pdist/mktorrent={row['cli_vs_mktorrent']:.2f}x (in-process {row['api_vs_mktorrent']:.2f}x)"
                + f" p2pdist/libtorrent={row['api_vs_libtorrent']:.2f}x",
                file=sys.stderr,
            )
        hashes = {name: read_metainfo(str(path)).info_hash_hex for name, path in outs.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    same = len(set(hashes.values())) == 1
    median = {key: statistics.median(r[key] for r in rounds) for key in ("cli_vs_mktorrent", "api_vs_mktorrent", "api_vs_libtorrent", "cli_vs_libtorrent")}
    speeds = {name: statistics.median(r["mb_s"][name] for r in rounds) for name in rounds[0]["mb_s"]}
    cpu = {name: statistics.median(r["cpu_s_per_gib"][name] for r in rounds) for name in rounds[0]["mb_s"]}
    startup_wall = statistics.median(wall for wall, _ in startup)
    startup_cpu = statistics.median(cpu for _, cpu in startup)
    result = {
        "size": size,
        "command_startup_s": {"wall": startup_wall, "cpu": startup_cpu},
        "piece_length": piece_length,
        "threads": threads,
        "rounds": rounds,
        "median_mb_s": speeds,
        "median_cpu_s_per_gib": cpu,
        "median_ratio": median,
        "same_info_hash": same,
        "info_hashes": hashes,
        "command": " ".join(sys.argv),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(
        f"create_speed size={size >> 20}MiB piece={piece_length >> 10}KiB threads={threads} rounds={args.rounds} "
        + " ".join(f"{k}={v:.0f}MB/s" for k, v in speeds.items())
        + f" p2pdist/mktorrent={median['cli_vs_mktorrent']:.2f}x (in-process {median['api_vs_mktorrent']:.2f}x)"
        + f" p2pdist/libtorrent={median['api_vs_libtorrent']:.2f}x (command {median['cli_vs_libtorrent']:.2f}x) cpu-s/GiB: "
        + " ".join(f"{k}={v:.2f}" for k, v in cpu.items())
        + f" startup(p2pdist create --help)={startup_wall:.2f}s wall {startup_cpu:.2f}s cpu"
        + f" same_info_hash={'yes' if same else 'NO'}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
