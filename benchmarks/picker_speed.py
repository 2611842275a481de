"""Piece picker speed at 100k pieces and 200 peers: picks/s (16 blocks each) and HAVEs/s.

Seeded and bounded: bitfields of mixed density (25/50/75 %) from one Random, then alternating
rounds of picks and HAVE updates, each round bounded in count and time; the median round is
reported. Prints one line and writes benchmarks/results/picker_speed.json.

    .venv/bin/python benchmarks/picker_speed.py [--pieces 100000] [--peers 200] [--seconds 1.5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from p2pdist.bitfield import Bitfield
from p2pdist.metainfo import FileEntry, Info, Layout
from p2pdist.piece_picker import PiecePicker

PIECE_LENGTH = 256 * 1024  # 16 blocks


def make_layout(num_pieces: int) -> Layout:
    total = PIECE_LENGTH * num_pieces
    files = (FileEntry(("bench",), total, 0),)
    info = Info("bench", PIECE_LENGTH, bytes(20 * num_pieces), files, False, True, None, total)
    return Layout(info)


def random_bitfield(rng: random.Random, n: int, kind: int) -> Bitfield:
    size = (n + 7) // 8
    a, b = rng.randbytes(size), rng.randbytes(size)
    if kind == 0:
        data = bytes(x & y for x, y in zip(a, b, strict=True))  # ~25 %
    elif kind == 1:
        data = a  # ~50 %
    else:
        data = bytes(x | y for x, y in zip(a, b, strict=True))  # ~75 %
    spare = (8 - n % 8) % 8
    if spare:
        data = data[:-1] + bytes([data[-1] & (0xFF << spare) & 0xFF])
    return Bitfield.from_bytes(data, n)


def pick_round(picker: PiecePicker, peers: list[int], rng: random.Random, seconds: float, limit: int) -> float:
    """Picks per CPU second (the machine is shared, so wall time drifts; CPU time much less)."""
    picks = 0
    start = time.process_time()
    deadline = time.perf_counter() + seconds
    while picks < limit:
        picker.pick(peers[int(rng.random() * len(peers))], 16)
        picks += 1
        if picks % 256 == 0 and time.perf_counter() > deadline:
            break
    return picks / (time.process_time() - start)


def have_round(picker: PiecePicker, peers: list[int], rng: random.Random, n: int, seconds: float, limit: int) -> float:
    """HAVE updates per CPU second."""
    updates = 0
    start = time.process_time()
    deadline = time.perf_counter() + seconds
    while updates < limit:
        picker.peer_has(peers[int(rng.random() * len(peers))], int(rng.random() * n))
        updates += 1
        if updates % 1024 == 0 and time.perf_counter() > deadline:
            break
    return updates / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=100_000)
    parser.add_argument("--peers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=1.5, help="per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    n = args.pieces
    t0 = time.process_time()
    # Four pieces already verified: past the random-first phase, as for most of a download.
    have = Bitfield(n, rng.sample(range(n), 4))
    picker = PiecePicker(make_layout(n), rng=random.Random(args.seed + 1), have=have, random_first=4)
    t1 = time.process_time()
    peers = list(range(args.peers))
    bitfields = [random_bitfield(rng, n, k % 3) for k in peers]
    t2 = time.process_time()
    for peer, bits in zip(peers, bitfields, strict=True):
        picker.add_peer(peer, bits)
    picker.availability(0)
    picker.pick(peers[0], 16)  # the first pick builds the rarest-first order
    t3 = time.process_time()

    pick_rates, have_rates = [], []
    for _ in range(args.rounds):
        pick_rates.append(pick_round(picker, peers, rng, args.seconds, 200_000))
        have_rates.append(have_round(picker, peers, rng, n, args.seconds, 2_000_000))
    result = {
        "pieces": n,
        "peers": args.peers,
        "blocks_per_pick": 16,
        "picks_per_s": round(statistics.median(pick_rates)),
        "haves_per_s": round(statistics.median(have_rates)),
        "pick_rounds": [round(r) for r in pick_rates],
        "have_rounds": [round(r) for r in have_rates],
        "init_cpu_s": round(t1 - t0, 3),
        "add_bitfields_cpu_s": round(t3 - t2, 3),
        "clock": "process CPU time",
        "started_pieces": len(picker.started_pieces()),
        "endgame": picker.endgame,
        "seed": args.seed,
    }
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "picker_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"picker_speed: {result['picks_per_s']} picks/s (16 blocks), {result['haves_per_s']} HAVEs/s, "
        f"{n} pieces x {args.peers} peers; {args.peers} bitfields in {result['add_bitfields_cpu_s']} s, "
        f"init {result['init_cpu_s']} s (CPU time)"
    )


if __name__ == "__main__":
    main()
