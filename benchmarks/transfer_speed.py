"""Loopback transfer: one seed, one leecher, 1 GiB in /dev/shm, p2pdist vs libtorrent.

Each peer is its own process, so CPU seconds are per side. Runs are interleaved
(p2pdist, libtorrent, p2pdist, libtorrent, ...) and the ratio is taken per pair, because loopback
speed on a 2-core machine drifts by a third from one minute to the next. Throughput is the file
size over the time from the leecher's first payload byte to its last verified piece (libtorrent
waits a few seconds before it dials a manually added peer; that wait is not transfer speed);
the wall time from start is reported too. ``--null`` adds a p2pdist leecher with null storage
(hashing, no disk): the network-only ceiling.

    .venv/bin/python benchmarks/transfer_speed.py [--size-mib 1024] [--rounds 3] [--null]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from p2pdist import bencode  # noqa: E402
from p2pdist.metainfo import encode_torrent  # noqa: E402

PIECE = 1 << 20


def make_data(root: Path, size: int, seed: int) -> Path:
    path = root / "seed" / "payload.bin"
    path.parent.mkdir(parents=True)
    block = hashlib.sha256(str(seed).encode()).digest() * 32768  # 1 MiB, then varied per MiB
    with open(path, "wb") as handle:
        for i in range(size // len(block)):
            handle.write(i.to_bytes(8, "big") + block[8:])
    return path


def make_torrent(data: Path, out: Path) -> None:
    hashes = []
    with open(data, "rb") as handle:
        while chunk := handle.read(PIECE):
            hashes.append(hashlib.sha1(chunk).digest())
    info = {b"name": data.name, b"piece length": PIECE, b"length": data.stat().st_size, b"pieces": b"".join(hashes)}
    out.write_bytes(encode_torrent(bencode.encode(info)))


def run_pair(script: str, torrent: Path, seed_dir: Path, leech_dir: Path, extra: list[str], timeout: float) -> dict:
    python = sys.executable
    seed = subprocess.Popen([python, str(HERE / script), "seed", str(torrent), str(seed_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(seed.stdout.readline())["port"]
        leech = subprocess.run(
            [python, str(HERE / script), "leech", str(torrent), str(leech_dir), "--peer", str(port), *extra],
            capture_output=True, text=True, timeout=timeout,
        )
        if leech.returncode:
            raise RuntimeError(f"{script} leecher failed: {leech.stderr[-2000:]}")
        result = json.loads(leech.stdout.strip().splitlines()[-1])
        seed.stdin.write("stop\n")
        seed.stdin.flush()
        result["seed_cpu"] = json.loads(seed.stdout.readline())["cpu"]
        return result
    finally:
        seed.kill()
        seed.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--null", action="store_true", help="also run a p2pdist leecher with null storage")
    parser.add_argument("--timeout", type=float, default=300.0, help="per transfer")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "transfer_speed.json")
    args = parser.parse_args()
    size = args.size_mib << 20
    root = Path(tempfile.mkdtemp(prefix="p2pdist-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    rows: list[dict] = []
    try:
        data = make_data(root, size, seed=1)
        torrent = root / "payload.torrent"
        make_torrent(data, torrent)
        gib = size / (1 << 30)
        # One untimed transfer per tool first: the first 1 GiB written to a fresh tmpfs after
        # the seed data pays the kernel's page reclaim (seen as 5-8 s of system time in
        # whichever tool ran first), which is the machine warming up, not either engine.
        for script, extra in (("_peer_p2pdist.py", []), ("_peer_libtorrent.py", [])):
            warm_dir = root / "warm-up"
            warm_dir.mkdir()
            run_pair(script, torrent, data.parent, warm_dir, extra, args.timeout)
            shutil.rmtree(warm_dir)
        for round_number in range(args.rounds):
            pair = {}
            kinds = [("p2pdist", "_peer_p2pdist.py", []), ("libtorrent", "_peer_libtorrent.py", [])]
            if args.null:
                kinds.append(("p2pdist-null", "_peer_p2pdist.py", ["--null"]))
            for name, script, extra in kinds:
                leech_dir = root / f"leech-{name}"
                leech_dir.mkdir()
                result = run_pair(script, torrent, data.parent, leech_dir, extra, args.timeout)
                shutil.rmtree(leech_dir)
                result["mb_s"] = size / result["transfer"] / 1e6 if result["transfer"] > 0 else 0.0
                result["leech_cpu_per_gib"] = result["cpu"] / gib
                result["seed_cpu_per_gib"] = result["seed_cpu"] / gib
                pair[name] = result
                print(
                    f"round {round_number + 1} {name:13s} {result['mb_s']:7.0f} MB/s  wall {result['elapsed']:.2f} s  "
                    f"CPU/GiB leech {result['leech_cpu_per_gib']:.2f} s seed {result['seed_cpu_per_gib']:.2f} s",
                    file=sys.stderr,
                )
            pair["ratio"] = pair["p2pdist"]["mb_s"] / pair["libtorrent"]["mb_s"]
            pair["leech_cpu_ratio"] = pair["p2pdist"]["cpu"] / pair["libtorrent"]["cpu"]
            rows.append(pair)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratios = [row["ratio"] for row in rows]
    cpu_ratios = [row["leech_cpu_ratio"] for row in rows]
    summary = {
        "size_mib": args.size_mib,
        "piece_size": PIECE,
        "rounds": rows,
        "median_throughput_ratio": statistics.median(ratios),
        "median_leech_cpu_ratio": statistics.median(cpu_ratios),
        "p2pdist_mb_s": statistics.median(row["p2pdist"]["mb_s"] for row in rows),
        "libtorrent_mb_s": statistics.median(row["libtorrent"]["mb_s"] for row in rows),
        # How many pairs meet each goal: with this much drift a median alone can hide a coin toss.
        "pairs_throughput_at_least_1": sum(ratio >= 1 for ratio in ratios),
        "pairs_leech_cpu_at_most_1": sum(ratio <= 1 for ratio in cpu_ratios),
        "p2pdist_leech_cpu_per_gib": statistics.median(row["p2pdist"]["leech_cpu_per_gib"] for row in rows),
        "libtorrent_leech_cpu_per_gib": statistics.median(row["libtorrent"]["leech_cpu_per_gib"] for row in rows),
    }
    if args.null:
        summary["p2pdist_null_mb_s"] = statistics.median(row["p2pdist-null"]["mb_s"] for row in rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=2))
    print(
        f"transfer {args.size_mib} MiB: p2pdist {summary['p2pdist_mb_s']:.0f} MB/s, libtorrent {summary['libtorrent_mb_s']:.0f} MB/s, "
        f"ratio per pair {', '.join(f'{r:.2f}' for r in ratios)} (median {summary['median_throughput_ratio']:.2f}; "
        f"{summary['pairs_throughput_at_least_1']} of {len(rows)} pairs >= 1.0)\n"
        f"leecher CPU p2pdist {summary['p2pdist_leech_cpu_per_gib']:.2f} s/GiB, libtorrent {summary['libtorrent_leech_cpu_per_gib']:.2f} s/GiB, "
        f"ratio per pair {', '.join(f'{r:.2f}' for r in cpu_ratios)} (median {summary['median_leech_cpu_ratio']:.2f}; "
        f"{summary['pairs_leech_cpu_at_most_1']} of {len(rows)} pairs <= 1.0)"
    )


if __name__ == "__main__":
    main()
