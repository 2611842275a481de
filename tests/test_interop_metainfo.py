"""Torrents from ``p2pdist create`` and from libtorrent's creator mean the same to both.

Both directions compare the info-hash, the files and every piece hash; a DP-share torrent is
also downloaded by libtorrent from its BEP 19 web seed, which proves the URL written for the
share is the one libtorrent needs.
"""

from __future__ import annotations

import gc
import os
import re
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from p2pdist.cli import main
from p2pdist.creator.hashing import HashInput, hash_pieces
from p2pdist.metainfo import Metainfo, parse_metainfo, read_metainfo

lt = pytest.importorskip("libtorrent")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def make_tree(root: Path) -> Path:
    files = {
        "setup.exe": os.urandom(70_000),
        "x64/drivers/net.sys": os.urandom(33_333),
        "x64/drivers/empty.inf": b"",
        "x86/readme.txt": b"hello\r\n" * 500,
        "zz/deep/er/still/data.bin": os.urandom(16_384),
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def lt_files(ti: object) -> list[tuple[str, int]]:
    storage = ti.files()  # type: ignore[attr-defined]
    return [(storage.file_path(i).replace(os.sep, "/"), storage.file_size(i)) for i in range(storage.num_files())]


def lt_piece_hashes(ti: object) -> bytes:
    return b"".join(bytes(ti.hash_for_piece(i)) for i in range(ti.num_pieces()))  # type: ignore[attr-defined]


def assert_same(meta: Metainfo, ti: object) -> None:
    assert str(ti.info_hashes().v1) == meta.info_hash_hex  # type: ignore[attr-defined]
    assert ti.name() == meta.info.name  # type: ignore[attr-defined]
    assert ti.piece_length() == meta.info.piece_length  # type: ignore[attr-defined]
    assert ti.num_pieces() == meta.info.num_pieces  # type: ignore[attr-defined]
    assert ti.total_size() == meta.info.total_length  # type: ignore[attr-defined]
    assert lt_files(ti) == [(f.relpath, f.length) for f in meta.info.files]
    assert lt_piece_hashes(ti) == meta.info.piece_hashes


def create(tmp_path: Path, *argv: str) -> Metainfo:
    out = tmp_path / "made.torrent"
    assert main(["create", *argv, "-o", str(out), "--force"]) == 0
    return read_metainfo(str(out))


def test_multi_file_torrent_from_p2pdist_loads_in_libtorrent(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "PS100012")
    meta = create(tmp_path, str(root), "--pkg", "PS100012", "--version", "2", "--piece-size", "16K",
                  "-t", "http://a/announce,http://b/announce", "-t", "http://c/announce", "-w", "http://dp/pkgs/")
    assert meta.info.multi_file and any(f.length == 0 for f in meta.info.files)
    ti = lt.torrent_info(str(tmp_path / "made.torrent"))
    assert_same(meta, ti)
    assert ti.priv()
    assert [(t.url, t.tier) for t in ti.trackers()] == [("http://a/announce", 0), ("http://b/announce", 0), ("http://c/announce", 1)]
    assert [w["url"] for w in ti.web_seeds()] == ["http://dp/pkgs/"]


def test_single_file_torrent_from_p2pdist_loads_in_libtorrent(tmp_path: Path) -> None:
    path = tmp_path / "hotfix.msu"
    path.write_bytes(os.urandom(100_001))
    meta = create(tmp_path, str(path), "--no-private")
    ti = lt.torrent_info(str(tmp_path / "made.torrent"))
    assert_same(meta, ti)
    assert lt_files(ti) == [("hotfix.msu", 100_001)]
    assert not ti.priv()


def libtorrent_create(path: Path, piece_length: int) -> bytes:
    storage = lt.file_storage()
    lt.add_files(storage, str(path))
    creator = lt.create_torrent(storage, piece_length, flags=lt.create_torrent.v1_only)
    creator.add_tracker("http://tracker/announce")
    lt.set_piece_hashes(creator, str(path.parent))
    return lt.bencode(creator.generate())


@pytest.mark.parametrize("piece_length", [16 * 1024, 64 * 1024])
def test_multi_file_torrent_from_libtorrent_parses_in_p2pdist(tmp_path: Path, piece_length: int) -> None:
    root = make_tree(tmp_path / "pkg")
    data = libtorrent_create(root, piece_length)
    meta = parse_metainfo(data)
    ti = lt.torrent_info(lt.bdecode(data))
    assert_same(meta, ti)
    assert meta.trackers == (("http://tracker/announce",),)
    # Our hasher, fed libtorrent's file order, reproduces libtorrent's piece hashes.
    inputs = [HashInput(tmp_path / f.relpath, f.length) for f in meta.info.files if not f.pad]
    assert hash_pieces(inputs, piece_length, threads=2) == meta.info.piece_hashes


def test_single_file_torrent_from_libtorrent_parses_in_p2pdist(tmp_path: Path) -> None:
    path = tmp_path / "tool.msi"
    path.write_bytes(os.urandom(50_000))
    data = libtorrent_create(path, 16 * 1024)
    meta = parse_metainfo(data)
    assert_same(meta, lt.torrent_info(lt.bdecode(data)))
    assert not meta.info.multi_file
    assert hash_pieces([HashInput(path, 50_000)], 16 * 1024) == meta.info.piece_hashes


# -- DP share web seed, downloaded by libtorrent ---------------------------------------------


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with the byte ranges web seeds ask for; records every path requested."""

    protocol_version = "HTTP/1.1"
    requested: list[str]

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self.requested.append(unquote(self.path))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
        if match:
            start = int(match[1])
            end = min(int(match[2]) if match[2] else len(data) - 1, len(data) - 1)
            body = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def web_root(tmp_path: Path) -> Iterator[tuple[Path, str, list[str]]]:
    root = tmp_path / "www"
    root.mkdir()
    requested: list[str] = []
    handler = type("Handler", (RangeHandler,), {"requested": requested})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()


def test_libtorrent_downloads_a_dp_package_from_its_web_seed(tmp_path: Path, web_root: tuple[Path, str, list[str]]) -> None:
    root, base, requested = web_root
    share = root / "SMSPKGD$"
    make_tree(share / "PS100012")
    outdir = tmp_path / "torrents"
    outdir.mkdir()
    assert main(["create", "--dp", str(share), "-O", str(outdir), "-w", f"{base}/SMSPKGD$", "--piece-size", "16K"]) == 0
    torrent = outdir / "PS100012.torrent"
    assert read_metainfo(str(torrent)).web_seeds == (f"{base}/SMSPKGD$/",)

    session = lt.session(
        {
            "listen_interfaces": "127.0.0.1:0",
            "enable_dht": False,
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            "alert_mask": 0,
        }
    )
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(torrent))
    download = tmp_path / "client"
    params.save_path = str(download)
    handle = session.add_torrent(params)
    deadline = time.monotonic() + 20
    while not handle.status().is_seeding and time.monotonic() < deadline:
        time.sleep(0.1)
    status = handle.status()
    session.remove_torrent(handle)
    # Seeding means every piece verified, not that every write reached the files: a session's
    # destructor waits for its disk jobs, so drop it before reading what it wrote.
    del handle, session
    gc.collect()
    assert status.is_seeding, f"libtorrent did not finish: {status.state} {status.progress:.2f} {status.errc.message()}"
    for path in (share / "PS100012").rglob("*"):
        if path.is_file():
            assert (download / "PS100012" / path.relative_to(share / "PS100012")).read_bytes() == path.read_bytes()
    assert requested and all(path.startswith("/SMSPKGD$/PS100012/") for path in requested)
    assert "/SMSPKGD$/PS100012/x64/drivers/net.sys" in requested
