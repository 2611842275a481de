"""For the storage tests: a multi-file layout with every shape, and an independent reader that
says which pieces on disk are really right (the ground truth for rechecks). Torrents come from
tests/support/torrents.py like everywhere else."""

from __future__ import annotations

import os
from pathlib import Path

from p2pdist.metainfo import Info
from tests.support.torrents import Pad, random_bytes


def piece_of(info: Info, data: bytes, index: int) -> bytes:
    start = index * info.piece_length
    return data[start : start + info.piece_size(index)]


def corrupt(piece: bytes) -> bytes:
    return bytes([piece[0] ^ 0xFF]) + piece[1:]


def active_root(info: Info, directory: Path) -> Path:
    final = directory / info.name
    return final if os.path.lexists(final) else directory / (info.name + ".part")


def disk_truth(info: Info, data: bytes, directory: Path) -> set[int]:
    """Pieces whose bytes on disk equal the source data, read without the storage code."""
    root = active_root(info, directory)
    stream = bytearray()
    holes: list[tuple[int, int]] = []  # byte ranges absent on disk (missing or short files)
    for entry in info.files:
        if entry.pad:
            stream += bytes(entry.length)
            continue
        path = root.joinpath(*entry.path[1:]) if info.multi_file else root
        try:
            with open(path, "rb") as handle:
                content = handle.read(entry.length)
        except FileNotFoundError:
            content = b""
        stream += content + bytes(entry.length - len(content))
        if len(content) < entry.length:
            holes.append((entry.offset + len(content), entry.offset + entry.length))
    good = set()
    for index in range(info.num_pieces):
        start, end = index * info.piece_length, index * info.piece_length + info.piece_size(index)
        if any(a < end and start < b for a, b in holes):
            continue
        if stream[start:end] == data[start:end]:
            good.add(index)
    return good


PIECE = 16 * 1024

# Every shape at once: a pad that aligns the next file to a piece boundary, an empty file, nested
# folders, a short file between long ones. Built with make_torrent(MULTI_FILES, piece_length=PIECE).
MULTI_FILES: dict[str, bytes | Pad] = {
    "a.bin": random_bytes(40_000, seed=1),
    ".pad/0": Pad(9_152),
    "empty.txt": b"",
    "sub/b.bin": random_bytes(5, seed=2),
    "sub/deeper/c.bin": random_bytes(70_001, seed=3),
    "z.bin": random_bytes(16_384, seed=4),
}
