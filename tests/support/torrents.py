"""Build small, real torrents in memory for tests (no creator CLI needed)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from p2pdist import bencode
from p2pdist.metainfo import Metainfo, PackageIdentity, encode_torrent, parse_metainfo


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def piece_hashes(data: bytes, piece_length: int) -> bytes:
    return b"".join(hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length))


def make_torrent(
    files: dict[str, bytes],
    *,
    name: str = "pkg",
    piece_length: int = 32 * 1024,
    trackers: tuple[tuple[str, ...], ...] = (),
    web_seeds: tuple[str, ...] = (),
    package: PackageIdentity | None = None,
    single: bool = False,
    private: bool = True,
) -> tuple[bytes, Metainfo]:
    """Torrent bytes and model for ``files`` (relative path -> content), in the given order."""
    stream = b"".join(files.values())
    info: dict[bytes, object] = {
        b"name": name,
        b"piece length": piece_length,
        b"pieces": piece_hashes(stream, piece_length),
    }
    if single:
        (content,) = files.values()
        info[b"length"] = len(content)
    else:
        info[b"files"] = [{b"length": len(body), b"path": path.split("/")} for path, body in files.items()]
    if private:
        info[b"private"] = 1
    if package is not None:
        info[b"p2pdist"] = package.to_bencode()
    raw = encode_torrent(bencode.encode(info), trackers=trackers, web_seeds=web_seeds)
    return raw, parse_metainfo(raw)


def write_files(root: Path, meta: Metainfo, files: dict[str, bytes]) -> None:
    """Lay ``files`` out under ``root`` the way the torrent names them (name folder included)."""
    for entry, body in zip(meta.info.files, files.values()):
        target = root.joinpath(*entry.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)


def read_tree(root: Path, meta: Metainfo) -> dict[str, bytes]:
    return {entry.relpath: root.joinpath(*entry.path).read_bytes() for entry in meta.info.real_files}
