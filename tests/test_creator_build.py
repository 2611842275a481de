"""Info dictionary, piece sizes and determinism of the torrents the creator builds."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pdist import bencode
from p2pdist.creator.build import TorrentOptions, auto_piece_length, build_torrent, check_url, parse_piece_size
from p2pdist.creator.scan import scan_path
from p2pdist.errors import UsageError
from p2pdist.metainfo import PackageIdentity
from p2pdist.metainfo.signing import SignatureStatus, generate_key, raw_public_key, verify_signature

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30


def make_package(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool.exe").write_bytes(bytes(range(256)) * 300)
    (root / "setup.msi").write_bytes(b"M" * 50_000)
    (root / "empty.cfg").write_bytes(b"")
    return root


@pytest.mark.parametrize(
    ("total", "expected"),
    [(1, 16 * KIB), (30 * MIB, 16 * KIB), (GIB, MIB), (4 * GIB, 4 * MIB), (100 * GIB, 16 * MIB)],
)
def test_auto_piece_length_examples(total: int, expected: int) -> None:
    assert auto_piece_length(total) == expected


@settings(max_examples=200)
@given(st.integers(1, 1 << 40))
def test_auto_piece_length_aims_at_1000_to_2000_pieces(total: int) -> None:
    length = auto_piece_length(total)
    assert length & (length - 1) == 0
    assert 16 * KIB <= length <= 16 * MIB
    pieces = -(-total // length)
    if 16 * KIB < length < 16 * MIB:
        assert 1000 <= pieces <= 2000
    if length == 16 * KIB:
        assert pieces <= 2000
    if length == 16 * MIB:
        assert pieces > 1000


@pytest.mark.parametrize(
    ("text", "size"),
    [("256K", 256 * KIB), ("256k", 256 * KIB), ("1M", MIB), ("1MiB", MIB), ("4mb", 4 * MIB), ("16384", 16 * KIB), ("20", MIB), ("16M", 16 * MIB), ("24", 16 * MIB)],
)
def test_parse_piece_size_accepts_admin_spellings(text: str, size: int) -> None:
    assert parse_piece_size(text) == size


@pytest.mark.parametrize("text", ["300K", "8K", "32M", "25", "1G", "abc", "", "-1M", "1.5M", "12"])
def test_parse_piece_size_refuses_with_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="piece size"):
        parse_piece_size(text)


@pytest.mark.parametrize("url", ["ftp://host/x", "http://", "not a url", "http://host/a b"])
def test_bad_tracker_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError):
        check_url(url, ("http", "https", "udp"), "tracker")


def test_multi_file_info_dict_carries_only_content_and_content_options(tmp_path: Path) -> None:
    source = scan_path(make_package(tmp_path / "PS100012"))
    options = TorrentOptions(
        trackers=(("http://t1/announce", "http://t2/announce"), ("udp://t3:80",)),
        web_seeds=("http://dp/share/",),
        piece_length=16 * KIB,
        comment="Office",
        package=PackageIdentity("PS100012", 7),
        creation_date=1_700_000_000,
    )
    data, meta = build_torrent(source, options, threads=2)
    top = bencode.decode(data)
    info = top[b"info"]
    assert set(info) == {b"name", b"piece length", b"pieces", b"files", b"private", b"p2pdist"}
    assert info[b"files"] == [
        {b"length": 76800, b"path": [b"bin", b"tool.exe"]},
        {b"length": 0, b"path": [b"empty.cfg"]},
        {b"length": 50000, b"path": [b"setup.msi"]},
    ]
    assert info[b"p2pdist"] == {b"package": b"PS100012", b"version": 7}
    joined = (tmp_path / "PS100012/bin/tool.exe").read_bytes() + (tmp_path / "PS100012/setup.msi").read_bytes()
    assert info[b"pieces"] == b"".join(hashlib.sha1(joined[i : i + 16 * KIB]).digest() for i in range(0, len(joined), 16 * KIB))
    assert meta.info_hash == hashlib.sha1(bencode.encode(info)).digest()
    assert top[b"announce"] == b"http://t1/announce"
    assert top[b"announce-list"] == [[b"http://t1/announce", b"http://t2/announce"], [b"udp://t3:80"]]
    assert meta.web_seeds == ("http://dp/share/",)
    assert meta.creation_date == 1_700_000_000
    assert meta.info.private and meta.info.package == PackageIdentity("PS100012", 7)


def test_single_file_torrent(tmp_path: Path) -> None:
    path = tmp_path / "patch.msp"
    path.write_bytes(b"p" * 40_000)
    data, meta = build_torrent(scan_path(path), TorrentOptions(private=False))
    info = bencode.decode(data)[b"info"]
    assert info[b"length"] == 40_000 and b"files" not in info and b"private" not in info
    assert not meta.info.multi_file and not meta.info.private
    assert meta.trackers == () and meta.creation_date is None


def test_same_content_and_options_give_the_same_info_hash(tmp_path: Path) -> None:
    first = make_package(tmp_path / "a" / "pkg")
    second = make_package(tmp_path / "b" / "pkg")
    os.utime(second / "setup.msi", ns=(5, 5))
    identity = PackageIdentity("PS100012", 1)
    _, meta_a = build_torrent(scan_path(first), TorrentOptions(package=identity, creation_date=1, comment="x"), threads=1)
    _, meta_b = build_torrent(
        scan_path(second), TorrentOptions(package=identity, creation_date=2, trackers=(("http://t/a",),)), threads=3
    )
    assert meta_a.info_hash == meta_b.info_hash
    _, public = build_torrent(scan_path(first), TorrentOptions(package=identity, private=False))
    _, bumped = build_torrent(scan_path(first), TorrentOptions(package=PackageIdentity("PS100012", 2)))
    assert len({meta_a.info_hash, public.info_hash, bumped.info_hash}) == 3


def test_signed_torrent_verifies_with_the_signing_key(tmp_path: Path) -> None:
    key = generate_key()
    options = TorrentOptions(package=PackageIdentity("PS100012", 3))
    data, meta = build_torrent(scan_path(make_package(tmp_path / "pkg")), options, sign_key=key)
    assert meta.signature is not None
    assert verify_signature(meta, [raw_public_key(key.public_key())]) is SignatureStatus.VALID
    unsigned_data, unsigned = build_torrent(scan_path(tmp_path / "pkg"), options)
    assert unsigned.info_hash == meta.info_hash and unsigned.signature is None
