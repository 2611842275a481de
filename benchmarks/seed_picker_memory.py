"""What the piece picker of a complete (seeding) package holds, by its number of pieces.

An agent keeps every package it holds started, so a thousand packages of a thousand pieces are a
thousand pickers of a thousand pieces: idle_cost.py's packages have one piece each and do not
show this part. Builds 100 pickers of complete torrents of each size and reports the traced
Python memory per picker (tracemalloc, so allocator slack is not counted).

    .venv/bin/python benchmarks/seed_picker_memory.py [--pieces 1 100 1000 10000]

Prints one line per size and writes benchmarks/results/seed_picker_memory.json.
"""

from __future__ import annotations

import argparse
import json
import random
import tracemalloc
from pathlib import Path

from p2pdist import bencode
from p2pdist.bitfield import Bitfield
from p2pdist.metainfo import Layout, encode_torrent, parse_metainfo
from p2pdist.piece_picker.picker import PiecePicker

RESULTS = Path(__file__).resolve().parent / "results" / "seed_picker_memory.json"
PIECE = 1 << 20
COPIES = 100


def per_picker(pieces: int, rng: random.Random) -> float:
    """Traced bytes per complete picker of ``pieces`` pieces (one shared generator, as in a session)."""
    info = {b"length": pieces * PIECE, b"name": b"x.bin", b"piece length": PIECE, b"pieces": bytes(20 * pieces), b"private": 1}
    meta = parse_metainfo(encode_torrent(bencode.encode(info), trackers=(("http://127.0.0.1/announce",),)))
    layout, have = Layout(meta.info), Bitfield.full(pieces)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        pickers = [PiecePicker(layout, rng=rng, have=have) for _ in range(COPIES)]
        size = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(pickers) == COPIES
    return size / COPIES


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, nargs="+", default=[1, 100, 1000, 10000])
    args = parser.parse_args()
    if any(not 1 <= n <= 100_000 for n in args.pieces):
        parser.error("--pieces must be 1..100000")
    rng = random.Random(1)
    result = {str(n): round(per_picker(n, rng) / 1024, 1) for n in args.pieces}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"kib_per_picker": result}, indent=2))
    for n, kib in result.items():
        print(f"complete picker of {n:>6} pieces: {kib:8.1f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
