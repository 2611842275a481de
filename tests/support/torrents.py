"""Build small, real torrents in memory for tests (no creator CLI needed): the one builder.

Files are given as a mapping of relative path (below the torrent's name, "/"-separated) to
content, in stream order; a ``Pad`` value is a BEP 47 pad file (zeros in the stream, attr "p").
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from p2pdist import bencode
from p2pdist.metainfo import Metainfo, PackageIdentity, encode_torrent, parse_metainfo


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass(frozen=True)
class Pad:
    """A pad file of ``length`` zero bytes: in the stream and the piece hashes, never on disk."""

    length: int


Files = Mapping[str, bytes | Pad]


def content(files: Files) -> bytes:
    """The torrent's byte stream: every file's bytes in order, pads as zeros."""
    return b"".join(bytes(body.length) if isinstance(body, Pad) else body for body in files.values())


def piece_hashes(data: bytes, piece_length: int) -> bytes:
    return b"".join(hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length))


def make_torrent(
    files: Files,
    *,
    name: str = "pkg",
    piece_length: int = 32 * 1024,
    trackers: tuple[tuple[str, ...], ...] = (),
    web_seeds: tuple[str, ...] = (),
    package: PackageIdentity | None = None,
    single: bool = False,
    private: bool = True,
) -> tuple[bytes, Metainfo]:
    """Torrent bytes and model for ``files`` (relative path -> content or Pad), in the given order.

    ``single`` makes a single-file torrent of the one file, named ``name``; ``private`` sets
    BEP 27's flag (every p2pdist package torrent is private)."""
    stream = content(files)
    info: dict[bytes, object] = {
        b"name": name,
        b"piece length": piece_length,
        b"pieces": piece_hashes(stream, piece_length),
    }
    if single:
        assert len(files) == 1, "a single-file torrent holds one file"
        info[b"length"] = len(stream)
    else:
        info[b"files"] = [file_entry(path, body) for path, body in files.items()]
    if private:
        info[b"private"] = 1
    if package is not None:
        info[b"p2pdist"] = package.to_bencode()
    raw = encode_torrent(bencode.encode(info), trackers=trackers, web_seeds=web_seeds)
    return raw, parse_metainfo(raw)


def file_entry(path: str, body: bytes | Pad) -> dict[bytes, object]:
    if isinstance(body, Pad):
        return {b"attr": b"p", b"length": body.length, b"path": path.split("/")}
    return {b"length": len(body), b"path": path.split("/")}


def write_files(root: Path, meta: Metainfo, files: dict[str, bytes]) -> None:
    """Lay ``files`` out under ``root`` the way the torrent names them (name folder included)."""
    for entry, body in zip(meta.info.files, files.values()):
        target = root.joinpath(*entry.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)


def read_tree(root: Path, meta: Metainfo) -> dict[str, bytes]:
    return {entry.relpath: root.joinpath(*entry.path).read_bytes() for entry in meta.info.real_files}
