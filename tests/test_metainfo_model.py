"""The frozen v1 metainfo model: what it reads, every refusal with its reason, and path safety.

The safety property is checked against an independent oracle written from Microsoft's naming
rules: a torrent is accepted exactly when every name is a valid Windows file name, and then
every file joined under a root stays under it on POSIX and on Windows.
"""

from __future__ import annotations

import hashlib
import ntpath
import os
import unicodedata
from pathlib import Path, PureWindowsPath

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from p2pdist.bencode import encode
from p2pdist.errors import BencodeError, MetainfoError, RemoteError
from p2pdist.metainfo import (
    FileEntry,
    PackageIdentity,
    Signature,
    encode_torrent,
    normalize_package_id,
    looks_like_package_id,
    parse_metainfo,
    read_metainfo,
    reencode,
)
from p2pdist.metainfo import model

PIECE = 16 * 1024


def hashes(total: int, piece_length: int = PIECE) -> bytes:
    count = -(-total // piece_length)
    return b"".join(hashlib.sha1(b"%d" % i).digest() for i in range(count))


def single(name: bytes = b"setup.msi", length: object = 40_000, **extra: object) -> dict[bytes, object]:
    info: dict[bytes, object] = {b"name": name, b"length": length, b"piece length": PIECE}
    if "pieces" not in extra:
        info[b"pieces"] = hashes(length) if isinstance(length, int) and length > 0 else b""
    info.update({key.encode(): value for key, value in extra.items()})
    return info


def multi(*files: tuple[list[bytes], int] | dict[bytes, object], name: bytes = b"PS100012", **extra: object) -> dict[bytes, object]:
    entries = [f if isinstance(f, dict) else {b"length": f[1], b"path": f[0]} for f in files]
    total = sum(int(e[b"length"]) for e in entries if isinstance(e.get(b"length"), int))  # type: ignore[call-overload]
    info: dict[bytes, object] = {
        b"name": name,
        b"files": entries,
        b"piece length": PIECE,
        b"pieces": hashes(max(total, 1)),
    }
    info.update({key.encode(): value for key, value in extra.items()})
    return info


TOP_KEYS = {"announce_list": b"announce-list", "url_list": b"url-list", "created_by": b"created by", "creation_date": b"creation date"}


def torrent(info: object, **top: object) -> bytes:
    document: dict[bytes, object] = {b"info": info}
    document.update({TOP_KEYS.get(k, k.encode()): v for k, v in top.items()})
    return encode(document)


def refused(data: bytes) -> MetainfoError:
    with pytest.raises(MetainfoError) as caught:
        parse_metainfo(data)
    assert isinstance(caught.value, RemoteError)
    return caught.value


# ---------------------------------------------------------------------------------------------
# what it reads


def test_single_file() -> None:
    info = single(length=40_000)
    data = torrent(info, announce=b"http://tracker.example/announce", comment=b"Office", created_by=b"p2pdist")
    meta = parse_metainfo(data)
    assert meta.name == "setup.msi" and not meta.info.multi_file
    assert meta.info.files == (FileEntry(("setup.msi",), 40_000, 0),)
    assert meta.info.total_length == 40_000 and meta.info.num_pieces == 3
    assert [meta.info.piece_size(i) for i in range(3)] == [PIECE, PIECE, 40_000 - 2 * PIECE]
    assert meta.info.piece_hash(2) == hashlib.sha1(b"2").digest()
    assert meta.raw_info == encode(info)
    assert meta.info_hash == hashlib.sha1(encode(info)).digest()
    assert meta.info_hash_hex == meta.info_hash.hex()
    assert meta.trackers == (("http://tracker.example/announce",),)
    assert meta.comment == "Office" and meta.created_by == "p2pdist" and meta.creation_date is None
    assert meta.info.private is False and meta.info.package is None and meta.signature is None
    for bad in (-1, 3):
        with pytest.raises(IndexError):
            meta.info.piece_hash(bad)
        with pytest.raises(IndexError):
            meta.info.piece_size(bad)


def test_info_hash_is_taken_over_the_received_bytes() -> None:
    data = torrent(single(), announce=b"http://t/a", creation_date=1700000000)
    start = data.index(b"4:infod") + len(b"4:info")
    meta = parse_metainfo(data)
    assert meta.raw_info == data[start : start + len(meta.raw_info)]
    assert meta.info_hash == hashlib.sha1(data[start : start + len(meta.raw_info)]).digest()
    assert meta.creation_date == 1700000000


def test_multi_file_paths_include_the_name_and_offsets_accumulate() -> None:
    meta = parse_metainfo(torrent(multi(([b"setup.exe"], 20_000), ([b"data", b"a.cab"], 0), ([b"data", b"b.cab"], 30_000))))
    assert meta.info.multi_file
    assert [(f.path, f.length, f.offset) for f in meta.info.files] == [
        (("PS100012", "setup.exe"), 20_000, 0),
        (("PS100012", "data", "a.cab"), 0, 20_000),
        (("PS100012", "data", "b.cab"), 30_000, 20_000),
    ]
    assert meta.info.files[2].relpath == "PS100012/data/b.cab"
    assert meta.info.total_length == 50_000 and meta.info.num_pieces == 4


def test_pad_files_are_read_and_left_out_of_real_files() -> None:
    pad = {b"attr": b"p", b"length": PIECE - 1000, b"path": [b".pad", b"15384"]}
    pad2 = {b"attr": b"px", b"length": PIECE - 1000, b"path": [b".pad", b"15384"]}  # same name is fine
    meta = parse_metainfo(torrent(multi(([b"a"], 1000), pad, ([b"b"], 1000), pad2, ([b"c"], 5))))
    assert [f.pad for f in meta.info.files] == [False, True, False, True, False]
    assert [f.path[-1] for f in meta.info.real_files] == ["a", "b", "c"]
    assert meta.info.files[2].offset == PIECE
    assert meta.info.total_length == 2 * PIECE + 5


def test_utf8_variants_win() -> None:
    info = multi({b"length": 10, b"path": [b"x"], b"path.utf-8": ["Brief für Sie.txt".encode()]}, name=b"p", **{"name.utf-8": "Paket".encode()})
    meta = parse_metainfo(torrent(info))
    assert meta.info.files[0].path == ("Paket", "Brief für Sie.txt")


def test_announce_list_bep12() -> None:
    tiers = [[b"http://a/1", b"http://a/2"], [], [b"udp://b/3"]]
    meta = parse_metainfo(torrent(single(), announce=b"http://ignored/", announce_list=tiers))
    assert meta.trackers == (("http://a/1", "http://a/2"), ("udp://b/3",))
    assert meta.tracker_urls == ("http://a/1", "http://a/2", "udp://b/3")
    # All tiers empty: fall back to announce (BEP 12).
    meta = parse_metainfo(torrent(single(), announce=b"http://only/", announce_list=[[], []]))
    assert meta.trackers == (("http://only/",),)
    assert parse_metainfo(torrent(single())).trackers == ()


@pytest.mark.parametrize(
    ("url_list", "expected"),
    [
        (b"http://dp/SMSPKGD$/PS100012/", ("http://dp/SMSPKGD$/PS100012/",)),
        ([b"http://dp1/p/", b"http://dp2/p/"], ("http://dp1/p/", "http://dp2/p/")),
        (b"", ()),
        ([b"", b"http://x/"], ("http://x/",)),
        ([], ()),
    ],
)
def test_url_list_bep19(url_list: object, expected: tuple[str, ...]) -> None:
    assert parse_metainfo(torrent(single(), url_list=url_list)).web_seeds == expected


def test_private_flag_bep27() -> None:
    assert parse_metainfo(torrent(single(private=1))).info.private is True
    assert parse_metainfo(torrent(single(private=0))).info.private is False


def test_package_identity_and_signature_block() -> None:
    info = single(**{"p2pdist": {b"package": b"PS100012", b"version": 7}})
    sig = {b"key": b"k" * 32, b"signature": b"s" * 64}
    meta = parse_metainfo(torrent(info, p2pdist=sig))
    assert meta.info.package == PackageIdentity("PS100012", 7)
    assert str(meta.info.package) == "PS100012 v7"
    assert meta.signature == Signature(b"k" * 32, b"s" * 64)


def test_model_is_frozen() -> None:
    meta = parse_metainfo(torrent(single()))
    for obj, attr in ((meta, "info_hash"), (meta.info, "name"), (meta.info.files[0], "length")):
        with pytest.raises(AttributeError):
            setattr(obj, attr, None)
    assert isinstance(meta.info.files, tuple) and isinstance(meta.trackers, tuple)


def test_read_metainfo(tmp_path: Path) -> None:
    path = tmp_path / "a.torrent"
    path.write_bytes(torrent(single()))
    assert read_metainfo(str(path)).name == "setup.msi"
    big = tmp_path / "big.torrent"
    with open(big, "wb") as handle:
        handle.truncate(model.MAX_TORRENT_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(MetainfoError, match="exceeds"):
        read_metainfo(str(big))


def test_encode_torrent_and_reencode_keep_the_info_bytes() -> None:
    meta = parse_metainfo(torrent(single(private=1), announce=b"http://a/", comment=b"c"))
    data = encode_torrent(
        meta.raw_info,
        trackers=(("http://a/", "http://b/"), ("http://c/",)),
        web_seeds=("http://dp/",),
        comment="hello",
        created_by="me",
        creation_date=5,
    )
    again = parse_metainfo(data)
    assert again.info_hash == meta.info_hash and again.raw_info == meta.raw_info
    assert again.trackers == (("http://a/", "http://b/"), ("http://c/",))
    assert (again.web_seeds, again.comment, again.created_by, again.creation_date) == (("http://dp/",), "hello", "me", 5)
    changed = parse_metainfo(reencode(again, comment=None, trackers=(("http://z/",),)))
    assert changed.info_hash == meta.info_hash
    assert changed.trackers == (("http://z/",),) and changed.comment is None and changed.web_seeds == ("http://dp/",)
    assert b"announce-list" not in reencode(changed)


def test_package_id_helpers() -> None:
    assert normalize_package_id(" ps100012 ") == "PS100012"
    assert looks_like_package_id("ABC0FFFF") and not looks_like_package_id("PS10001G")
    for bad in ("PS10001", "PS1000123", "PS10001G", "PS 10001", "ＰS100012", "PS10001２"):
        with pytest.raises(ValueError):
            normalize_package_id(bad)
    for package_id, version in (("PS100012\n", 1), ("ps100012", 1), ("PS100012", -1), ("PS100012", 2**31)):
        with pytest.raises(MetainfoError):
            PackageIdentity(package_id, version)


# ---------------------------------------------------------------------------------------------
# refusals, each with its exact reason

BAD_INFO: list[tuple[str, dict[bytes, object], str]] = [
    ("piece length zero", single(**{"piece length": 0}), "below 1"),
    ("piece length 1000", single(**{"piece length": 1000}), "piece length 1000 is not a power of two >= 16384"),
    ("piece length 8 KiB", single(**{"piece length": 8192}), "not a power of two >= 16384"),
    ("piece length 24 KiB", single(**{"piece length": 24576}), "not a power of two"),
    ("piece length 256 MiB", single(**{"piece length": 2**28}), "exceeds"),
    ("piece length 32 MiB", single(**{"piece length": 2**25}), "piece length 33554432 exceeds 16777216"),
    ("symlink file", multi(([b"a"], 1), {b"attr": b"l", b"length": 0, b"path": [b"lnk"], b"symlink path": [b"a"]}),
     "info.files[1] is a symlink (BEP 47 attr 'l')"),
    ("symlink among attrs", multi({b"attr": b"xl", b"length": 1, b"path": [b"run.cmd"]}), "info.files[0] is a symlink"),
    ("symlink path only", multi({b"length": 1, b"path": [b"a"], b"symlink path": [b"..", b"x"]}), "is a symlink"),
    ("single-file symlink", single(attr=b"l"), "info is a symlink"),
    ("attr not string", multi({b"attr": 1, b"length": 1, b"path": [b"a"]}), "info.files[0].attr is not a string"),
    ("piece length string", single(**{"piece length": b"16384"}), "info.piece length is not an integer"),
    ("pieces 21 bytes", single(pieces=b"x" * 21), "not a multiple of 20"),
    ("pieces missing hash", single(length=40_000, pieces=b"x" * 40), "holds 2 hashes but 40000 bytes need 3 pieces"),
    ("pieces extra hash", single(length=10, pieces=b"x" * 40), "holds 2 hashes but 10 bytes need 1 pieces"),
    ("pieces not string", single(pieces=[b"x" * 20]), "info.pieces is not a string"),
    ("no name", {b"length": 1, b"piece length": PIECE, b"pieces": b"x" * 20}, "info.name is not a string"),
    ("name not utf-8", single(name=b"\xff.msi"), "info.name is not valid UTF-8"),
    ("name dotdot", single(name=b".."), "'..' is not allowed"),
    ("name separator", single(name=b"../evil"), "a path separator"),
    ("name empty", single(name=b""), "empty path component"),
    ("name reserved", single(name=b"nul"), "reserved device name"),
    ("name.utf-8 hostile", single(**{"name.utf-8": b"..\\x"}), "a path separator"),
    ("negative length", single(length=-1, pieces=b""), "info.length is -1, below 0"),
    ("length not int", single(length=b"5"), "info.length is not an integer"),
    ("zero length", single(length=0, pieces=b""), "total length 0"),
    ("length and files", {**single(), b"files": [{b"length": 1, b"path": [b"a"]}]}, "both 'length' and 'files'"),
    ("neither length nor files", {b"name": b"x", b"piece length": PIECE, b"pieces": b""}, "needs 'length' or a non-empty 'files'"),
    ("files empty", multi(), "non-empty 'files'"),
    ("files not list", {**multi(([b"a"], 1)), b"files": {b"a": 1}}, "non-empty 'files'"),
    ("file not dict", {**multi(([b"a"], 1)), b"files": [b"a"]}, "info.files[0] is not a dictionary"),
    ("file length missing", multi({b"path": [b"a"]}), "info.files[0].length is not an integer"),
    ("file length negative", multi(([b"a"], 5), ([b"b"], -1)), "info.files[1].length is -1, below 0"),
    ("path missing", multi({b"length": 1}), "info.files[0].path is not a list"),
    ("path string", multi({b"length": 1, b"path": b"a"}), "info.files[0].path is not a list"),
    ("path empty", multi(([], 1)), "info.files[0]: empty path"),
    ("path part int", multi(([b"a", 1], 1)), "info.files[0].path is not a string"),  # type: ignore[list-item]
    ("path not utf-8", multi(([b"\xc3("], 1)), "is not valid UTF-8"),
    ("absolute path", multi(([b"/etc", b"passwd"], 1)), "a path separator"),
    ("absolute via empty part", multi(([b"", b"etc"], 1)), "empty path component"),
    ("empty part inside", multi(([b"a", b"", b"b"], 1)), "empty path component"),
    ("dotdot", multi(([b"..", b"..", b"Windows", b"system32", b"evil.dll"], 1)), "'..' is not allowed"),
    ("dot", multi(([b".", b"a"], 1)), "'.' is not allowed"),
    ("slash inside", multi(([b"a/../../b"], 1)), "a path separator"),
    ("backslash inside", multi(([b"..\\..\\b"], 1)), "a path separator"),
    ("drive letter", multi(([b"C:", b"Windows"], 1)), "drive letter or stream name"),
    ("drive-relative", multi(([b"c:evil.exe"], 1)), "drive letter or stream name"),
    ("alternate data stream", multi(([b"a.txt:Zone.Identifier"], 1)), "drive letter or stream name"),
    ("NUL", multi(([b"a\x00.exe"], 1)), "a NUL character"),
    ("control", multi(([b"a\x1b[31m"], 1)), "a control character"),
    ("DEL", multi(([b"a\x7f"], 1)), "a control character"),
    ("C1 control", multi((["a\u0085b".encode()], 1)), "a control character"),
    ("wildcard", multi(([b"*.exe"], 1)), "not allowed in Windows file names"),
    ("pipe", multi(([b"a|b"], 1)), "not allowed in Windows file names"),
    ("quote", multi(([b'a"b'], 1)), "not allowed in Windows file names"),
    ("reserved CON", multi(([b"CON"], 1)), "'CON' is a reserved device name"),
    ("reserved aux.txt", multi(([b"dir", b"aux.txt"], 1)), "reserved device name"),
    ("reserved Com1.log", multi(([b"Com1.log"], 1)), "reserved device name"),
    ("reserved lpt9", multi(([b"lpt9"], 1)), "reserved device name"),
    ("reserved superscript", multi((["COM\u00b9".encode()], 1)), "reserved device name"),
    ("reserved with space", multi(([b"nul .tar.gz"], 1)), "reserved device name"),
    ("reserved folder", multi(([b"prn", b"a"], 1)), "reserved device name"),
    ("trailing dot", multi(([b"setup.exe."], 1)), "ends with a dot or space"),
    ("trailing space", multi(([b"folder ", b"a"], 1)), "ends with a dot or space"),
    ("dots only", multi(([b"..."], 1)), "ends with a dot or space"),
    ("case collision", multi(([b"Setup.exe"], 1), ([b"SETUP.EXE"], 1)), "collide (names differ only in case)"),
    ("folder case collision", multi(([b"Data", b"a"], 1), ([b"data", b"A"], 1)), "collide"),
    ("exact duplicate", multi(([b"a"], 1), ([b"a"], 1)), "collide"),
    ("file then folder", multi(([b"a"], 1), ([b"A", b"b"], 1)), "has the name of a folder"),
    ("folder then file", multi(([b"a", b"b"], 1), ([b"a"], 1)), "has the name of a folder"),
    ("component too long", multi(([b"x" * 256], 1)), "longer than 255 bytes"),
    ("path too deep", multi(([b"d"] * 33, 1)), "deeper than 32"),
    ("path too long", multi(([b"d" * 200] * 6, 1)), "path longer than 1024 bytes"),
    ("pad file escapes", multi(([b"a"], 1), {b"attr": b"p", b"length": 5, b"path": [b"..", b"..", b"x"]}), "'..' is not allowed"),
    ("pad file empty path", multi(([b"a"], 1), {b"attr": b"p", b"length": 5, b"path": []}), "empty path"),
    ("private 2", single(private=2), "info.private must be 0 or 1"),
    ("private string", single(private=b"1"), "info.private must be 0 or 1"),
    ("package not dict", single(p2pdist=b"PS100012"), "info.p2pdist is not a dictionary"),
    ("package bad id", single(p2pdist={b"package": b"PS10001Z", b"version": 1}), "is not a PackageID"),
    ("package id newline", single(p2pdist={b"package": b"PS100012\n", b"version": 1}), "is not a PackageID"),
    ("package id not ascii", single(p2pdist={b"package": "PS10001\u00e9".encode(), b"version": 1}), "not ASCII"),
    ("package version negative", single(p2pdist={b"package": b"PS100012", b"version": -1}), "out of range"),
    ("package version string", single(p2pdist={b"package": b"PS100012", b"version": b"1"}), "integer 'version'"),
    ("too many pieces", single(length=(model.MAX_PIECES + 1) * PIECE, pieces=b"x" * 20), f"more than {model.MAX_PIECES}"),
]


@pytest.mark.parametrize(("info", "reason"), [case[1:] for case in BAD_INFO], ids=[case[0] for case in BAD_INFO])
def test_refuses_bad_info(info: dict[bytes, object], reason: str) -> None:
    assert reason in str(refused(torrent(info)))


BAD_TOP: list[tuple[str, dict[str, object], str]] = [
    ("announce not string", {"announce": 5}, "announce is not a string"),
    ("announce with space", {"announce": b"http://t/a b"}, "contains spaces or control characters"),
    ("announce with newline", {"announce": b"http://t/\r\nX-Evil: 1"}, "control characters"),
    ("announce too long", {"announce": b"http://t/" + b"a" * 2048}, "longer than 2048 bytes"),
    ("announce-list not list", {"announce_list": b"http://t/"}, "announce-list is not a list"),
    ("tier not list", {"announce_list": [b"http://t/"]}, "announce-list[0] is not a list"),
    ("tier url bad", {"announce_list": [[b"http://t/"], [b"bad url"]]}, "announce-list[1] contains spaces"),
    ("too many trackers", {"announce_list": [[b"http://t/%d" % i for i in range(65)]]}, "more than 64 trackers"),
    ("url-list int", {"url_list": 1}, "url-list is not a string or list"),
    ("url-list item int", {"url_list": [1]}, "url-list is not a string"),
    ("too many web seeds", {"url_list": [b"http://s/%d" % i for i in range(65)]}, "more than 64 web seeds"),
    ("comment not utf-8", {"comment": b"\xff"}, "comment is not valid UTF-8"),
    ("created by not string", {"created_by": 1}, "created by is not a string"),
    ("signature block not dict", {"p2pdist": b"x"}, "p2pdist block is not a dictionary"),
    ("signature key short", {"p2pdist": {b"key": b"k" * 31, b"signature": b"s" * 64}}, "32-byte Ed25519 public key"),
    ("signature short", {"p2pdist": {b"key": b"k" * 32, b"signature": b"s" * 63}}, "64-byte Ed25519 signature"),
]


@pytest.mark.parametrize(("top", "reason"), [case[1:] for case in BAD_TOP], ids=[case[0] for case in BAD_TOP])
def test_refuses_bad_top_level(top: dict[str, object], reason: str) -> None:
    assert reason in str(refused(torrent(single(), **top)))


def test_refuses_missing_or_wrong_info() -> None:
    assert "no info dictionary" in str(refused(encode({b"announce": b"http://t/"})))
    assert "no info dictionary" in str(refused(encode({b"info": [1]})))


def test_bencode_errors_pass_through_with_offset() -> None:
    data = torrent(single())
    with pytest.raises(BencodeError) as caught:
        parse_metainfo(data + b"x")
    assert caught.value.offset == len(data)
    with pytest.raises(BencodeError, match="top-level value is not a dictionary"):
        parse_metainfo(b"li1ee")


def test_size_cap_is_checked_before_decoding() -> None:
    data = b"d" + b"\x00" * model.MAX_TORRENT_BYTES
    assert f"exceeds {model.MAX_TORRENT_BYTES}" in str(refused(data))


def test_file_count_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    # The cap lowered to 3 so the check runs in microseconds (100k real entries take seconds).
    monkeypatch.setattr(model, "MAX_FILES", 3)
    files = [([b"f%d" % i], 1) for i in range(4)]
    assert "torrent has 4 files, more than 3" in str(refused(torrent(multi(*files[:4]))))
    assert len(parse_metainfo(torrent(multi(*files[:3]))).info.files) == 3


# ---------------------------------------------------------------------------------------------
# the safety property


_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {p + s for p in ("COM", "LPT") for s in "123456789\u00b9\u00b2\u00b3"}


def windows_valid(part: str) -> bool:
    """Microsoft's 'Naming Files, Paths, and Namespaces' rules, plus no control characters."""
    if part in ("", ".", "..") or part[-1] in ". ":
        return False
    if any(ch in '<>:"/\\|?*' or unicodedata.category(ch) == "Cc" for ch in part):
        return False
    if part.split(".")[0].rstrip(" ").upper() in _RESERVED:
        return False
    return len(part.encode()) <= 255


def oracle_accepts(name: str, files: list[tuple[list[str], int, bool]]) -> bool:
    if not windows_valid(name) or sum(length for _, length, _ in files) == 0:
        return False
    for parts, _, _ in files:
        if not parts or len(parts) > 32 or not all(windows_valid(p) for p in parts) or len("/".join(parts).encode()) > 1024:
            return False
    real = [tuple(p.casefold() for p in parts) for parts, _, pad in files if not pad]
    if len(set(real)) != len(real):
        return False
    return not any(a[: len(b)] == b for a in real for b in real if len(b) < len(a))


HOSTILE = [
    "..", ".", "", "a", "B", "con", "CON.txt", "Nul", "com1.log", "LPT\u00b2", "a.", "a ", " a", "c:",
    "C:\\", "/", "\\", "x/y", "\x00", "\x1f", "\x7f", "\u0085", "é", "ß", "SS", ".pad", "~1", "<", "?",
    "*", "|", '"', "...", "//srv/share", "setup.exe", "SETUP.EXE", "\u202e", "\uff0e\uff0e",
]
SAFE = ["a", "B", "setup.exe", "Data", "é", "ß", "SS", ".pad", "~1", "x.y.z", "Program Files"]
component = st.one_of(
    st.sampled_from(SAFE),
    st.lists(st.sampled_from(SAFE), min_size=1, max_size=3).map("_".join),
    st.lists(st.sampled_from(HOSTILE), min_size=1, max_size=3).map("".join),
    st.text(max_size=4),
)
file_entries = st.lists(
    st.tuples(st.lists(component, max_size=4), st.integers(0, 3 * PIECE), st.booleans()), min_size=1, max_size=5
)


ROOT = Path("/nonexistent-p2pdist-root/cache/0123abcd")
WINDOWS_ROOT = PureWindowsPath("C:\\ProgramData\\p2pdist\\cache\\0123abcd")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(component, file_entries, st.booleans())
def test_accepted_torrents_name_nothing_outside_their_folder(name: str, files: list[tuple[list[str], int, bool]], as_single: bool) -> None:
    if as_single:
        files = [([], files[0][1], False)]
        info = single(name=name.encode(), length=files[0][1], pieces=hashes(max(files[0][1], 1)))
        expected = oracle_accepts(name, [([name], files[0][1], False)])
    else:
        entries = [
            {b"length": length, b"path": [p.encode() for p in parts], **({b"attr": b"p"} if pad else {})}
            for parts, length, pad in files
        ]
        info = multi(*entries, name=name.encode())
        expected = oracle_accepts(name, files)
    try:
        meta = parse_metainfo(torrent(info))
    except MetainfoError as error:
        assert not expected, f"refused a safe torrent: {error}"
        event("refused")
        return
    event("accepted")
    assert expected, f"accepted an unsafe torrent: {[f.path for f in meta.info.files]}"
    for entry in meta.info.files:
        joined = os.path.join(ROOT, *entry.path)
        assert os.path.normpath(joined).startswith(str(ROOT) + os.sep)
        assert Path(joined).resolve().is_relative_to(ROOT.resolve())
        on_windows = WINDOWS_ROOT.joinpath(*entry.path)
        assert on_windows.parts == (*WINDOWS_ROOT.parts, *entry.path)  # no drive, root or separator
        assert ntpath.normpath(str(on_windows)).startswith(str(WINDOWS_ROOT) + "\\")
        assert all(windows_valid(part) for part in entry.path)
        assert entry.path[0] == meta.info.name
    real = [tuple(p.casefold() for p in f.path) for f in meta.info.real_files]
    assert len(set(real)) == len(real)


def test_safety_oracle_sees_both_outcomes() -> None:
    """The property above is only meaningful if its inputs are both accepted and refused."""
    assert oracle_accepts("PS100012", [(["setup.exe"], 1, False), (["SS"], 1, False), ([".pad", "1"], 1, True)])
    parse_metainfo(torrent(multi(([b"setup.exe"], 1), ([b"SS"], 1), {b"attr": b"p", b"length": 1, b"path": [b".pad", b"1"]})))
    assert not oracle_accepts("PS100012", [(["ß"], 1, False), (["SS"], 1, False)])
    assert "collide" in str(refused(torrent(multi((["ß".encode()], 1), ([b"SS"], 1)))))


# ---------------------------------------------------------------------------------------------
# fuzzing: only the documented errors escape


def _nodes(value: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _nodes(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _nodes(item, (*path, index))
    return found


def _replace(value: object, path: tuple[object, ...], new: object) -> object:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    assert isinstance(value, list) and isinstance(head, int)
    return [*value[:head], _replace(value[head], rest, new), *value[head + 1 :]]


FUZZ_BASE = {
    b"announce": b"http://t/a",
    b"announce-list": [[b"http://t/a", b"http://t/b"], [b"udp://u/c"]],
    b"comment": b"c",
    b"creation date": 1,
    b"info": multi(
        ([b"a", b"setup.exe"], 20_000),
        {b"attr": b"p", b"length": 12_768, b"path": [b".pad", b"12768"]},
        ([b"b"], 5),
        private=1,
        p2pdist={b"package": b"PS100012", b"version": 1},
    ),
    b"p2pdist": {b"key": b"k" * 32, b"signature": b"s" * 64},
    b"url-list": [b"http://dp/x/"],
}
fuzz_values = st.recursive(
    st.integers(-3, 2**40) | st.binary(max_size=24) | st.sampled_from([b"..", b"CON", b"a/b", b"p", b"", b"\xff"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from([b"length", b"path", b"attr", b"name", b"x"]), children, max_size=3),
    max_leaves=6,
)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_structural_mutations_only_raise_documented_errors(data: st.DataObject) -> None:
    assert parse_metainfo(encode(FUZZ_BASE)).signature is not None
    document = FUZZ_BASE
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_nodes(document)))
        document = _replace(document, path, data.draw(fuzz_values))  # type: ignore[assignment]
    try:
        meta = parse_metainfo(encode(document))
    except (BencodeError, MetainfoError) as error:
        assert str(error)
        return
    for entry in meta.info.files:  # whatever got through is still safe
        assert all(windows_valid(part) for part in entry.path)


def test_piece_length_ceiling_is_16_mib_and_executable_attr_is_plain() -> None:
    big = single(length=40_000, pieces=hashes(1), **{"piece length": model.MAX_PIECE_LENGTH})
    assert parse_metainfo(torrent(big)).info.piece_length == 16 * 1024 * 1024
    runnable = parse_metainfo(torrent(multi({b"attr": b"x", b"length": 5, b"path": [b"run.cmd"]})))
    assert [(f.relpath, f.pad) for f in runnable.info.files] == [("PS100012/run.cmd", False)]
