"""Shared builders for the storage tests: real torrents from real bytes, and an independent
reader that says which pieces on disk are really right (the ground truth for rechecks)."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Sequence
from pathlib import Path

from p2pdist import bencode
from p2pdist.metainfo import Info, Metainfo, parse_metainfo

# (path parts below the torrent name, length, is_pad)
FileSpec = tuple[tuple[str, ...], int, bool]


def make_torrent(
    files: Sequence[FileSpec] | int, piece_length: int = 16 * 1024, *, name: str = "pkg", seed: int = 1
) -> tuple[Metainfo, bytes]:
    """A parsed torrent and its data; an int means a single-file torrent of that size."""
    rng = random.Random(seed)
    if isinstance(files, int):
        data = rng.randbytes(files)
        info: dict[bytes, object] = {b"length": files}
    else:
        chunks, entries = [], []
        for parts, length, pad in files:
            chunks.append(bytes(length) if pad else rng.randbytes(length))
            entry: dict[bytes, object] = {b"length": length, b"path": [p.encode() for p in parts]}
            if pad:
                entry[b"attr"] = b"p"
            entries.append(entry)
        data = b"".join(chunks)
        info = {b"files": entries}
    hashes = b"".join(
        hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length)
    )
    info.update({b"name": name.encode(), b"piece length": piece_length, b"pieces": hashes})
    raw = bencode.encode({b"info": info})
    return parse_metainfo(raw), data


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


MULTI_FILES: list[FileSpec] = [
    (("a.bin",), 40_000, False),
    ((".pad", "0"), 9_152, True),
    (("empty.txt",), 0, False),
    (("sub", "b.bin"), 5, False),
    (("sub", "deeper", "c.bin"), 70_001, False),
    (("z.bin",), 16_384, False),
]
