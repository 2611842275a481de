"""Write the .torrent test vectors and their manifest (tests/vectors/torrents/).

Run ``python tests/vectors/make_torrent_vectors.py`` after changing a vector; the output is
deterministic (no clock, no randomness; Ed25519 signatures are deterministic), and
tests/test_metainfo_vectors.py checks that the committed files are exactly what this script writes.

Valid torrents are encoded with bencode.py, not p2pdist's encoder, and their info-hashes and
signatures are computed here with hashlib and cryptography, so the vectors are an outside
reference for the parser rather than a copy of it. Hostile byte strings are written by hand.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import bencodepy
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

OUT = Path(__file__).resolve().parent / "torrents"
PIECE = 16 * 1024
# A fixed test key (never used outside tests): seed bytes 0x01 * 32.
SIGNING_KEY = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)


def pieces(total: int, piece_length: int = PIECE) -> bytes:
    return b"".join(hashlib.sha1(b"piece %d" % i).digest() for i in range(-(-total // piece_length)))


def single(name: bytes = b"setup.msi", length: int = 40_000, **extra: Any) -> dict[bytes, Any]:
    info = {b"length": length, b"name": name, b"piece length": PIECE}
    if "pieces" not in extra:
        info[b"pieces"] = pieces(max(length, 1))
    info.update({key.encode(): value for key, value in extra.items()})
    return info


def multi(*files: tuple[list[bytes], int] | dict[bytes, Any], name: bytes = b"PS100012", **extra: Any) -> dict[bytes, Any]:
    entries = [f if isinstance(f, dict) else {b"length": f[1], b"path": f[0]} for f in files]
    total = sum(e[b"length"] for e in entries if isinstance(e.get(b"length"), int))
    info = {b"files": entries, b"name": name, b"piece length": PIECE, b"pieces": pieces(max(total, 1))}
    info.update({key.encode(): value for key, value in extra.items()})
    return info


def torrent(info: Any, **top: Any) -> bytes:
    document = {b"info": info}
    document.update({key.replace("_", "-").encode(): value for key, value in top.items()})
    return bencodepy.encode(document)


def pad(length: int) -> dict[bytes, Any]:
    return {b"attr": b"p", b"length": length, b"path": [b".pad", b"%d" % length]}


ANNOUNCE = b"http://site-server:8000/announce"
GOOD = torrent(single(), announce=ANNOUNCE)
GOOD_INFO = bencodepy.encode(single())
# An info dictionary naming its file twice: bencode.py silently keeps the last name; a strict
# decoder refuses rather than pick one.
DUPLICATE_NAME = b"d4:infod6:lengthi5e4:name1:a4:name1:b12:piece lengthi16384e6:pieces20:" + b"\x00" * 20 + b"ee"


def valid() -> dict[str, tuple[bytes, dict[str, Any]]]:
    """name -> (torrent bytes, facts the parser must report)."""
    vectors: dict[str, tuple[dict[bytes, Any], dict[str, Any], dict[str, Any]]] = {
        "valid_single.torrent": (
            single(),
            {"announce": ANNOUNCE, "comment": b"Office 2021", "created by": b"mktorrent 1.1", "creation date": 1700000000},
            {"files": [[["setup.msi"], 40_000, False]], "trackers": [[ANNOUNCE.decode()]], "comment": "Office 2021"},
        ),
        "valid_multi.torrent": (
            multi(([b"setup.exe"], 30_000), ([b"data", b"a.cab"], 0), ([b"data", b"b.cab"], 70_000), ([b"Brief f\xc3\xbcr Sie.txt"], 12)),
            {"announce": ANNOUNCE},
            {
                "files": [
                    [["PS100012", "setup.exe"], 30_000, False],
                    [["PS100012", "data", "a.cab"], 0, False],
                    [["PS100012", "data", "b.cab"], 70_000, False],
                    [["PS100012", "Brief für Sie.txt"], 12, False],
                ],
            },
        ),
        "valid_pad_files.torrent": (
            multi(([b"a.bin"], 1000), pad(PIECE - 1000), ([b"b.bin"], PIECE + 5), pad(PIECE - 5), ([b"c.bin"], 7)),
            {"announce": ANNOUNCE},
            {
                "files": [
                    [["PS100012", "a.bin"], 1000, False],
                    [["PS100012", ".pad", str(PIECE - 1000)], PIECE - 1000, True],
                    [["PS100012", "b.bin"], PIECE + 5, False],
                    [["PS100012", ".pad", str(PIECE - 5)], PIECE - 5, True],
                    [["PS100012", "c.bin"], 7, False],
                ],
            },
        ),
        "valid_announce_list.torrent": (
            single(name=b"tool.zip", length=5000),
            {
                "announce": b"http://ignored-when-list-present/announce",
                "announce-list": [[b"http://hq:8000/announce", b"http://hq2:8000/announce"], [], [b"udp://backup:6969/announce"]],
            },
            {
                "files": [[["tool.zip"], 5000, False]],
                "trackers": [["http://hq:8000/announce", "http://hq2:8000/announce"], ["udp://backup:6969/announce"]],
            },
        ),
        "valid_url_list_string.torrent": (
            single(name=b"PS100012.zip", length=20_000),
            {"announce": ANNOUNCE, "url-list": b"http://dp01/SMSPKGD$/PS100012/"},
            {"files": [[["PS100012.zip"], 20_000, False]], "web_seeds": ["http://dp01/SMSPKGD$/PS100012/"]},
        ),
        "valid_url_list_list.torrent": (
            multi(([b"install.cmd"], 300), ([b"payload.bin"], 33_000)),
            {"announce": ANNOUNCE, "url-list": [b"http://dp01/SMSPKGD$/", b"", b"http://dp02/SMSPKGE$/"]},
            {
                "files": [[["PS100012", "install.cmd"], 300, False], [["PS100012", "payload.bin"], 33_000, False]],
                "web_seeds": ["http://dp01/SMSPKGD$/", "http://dp02/SMSPKGE$/"],
            },
        ),
    }
    out: dict[str, tuple[bytes, dict[str, Any]]] = {}
    for name, (info, top, facts) in vectors.items():
        document = {b"info": info}
        document.update({key.encode(): value for key, value in top.items()})
        trackers = [[top["announce"].decode()]] if "announce" in top else []
        facts = {"info_hash": hashlib.sha1(bencodepy.encode(info)).hexdigest(), "trackers": trackers, "web_seeds": [], **facts}
        out[name] = (bencodepy.encode(document), facts)

    # A private package torrent signed the way the repository signs (format spelled out here).
    info = multi(([b"setup.msi"], 50_000), name=b"PS100012", private=1, p2pdist={b"package": b"PS100012", b"version": 3})
    info_hash = hashlib.sha1(bencodepy.encode(info)).digest()
    message = bencodepy.encode(
        {
            b"info-hash": info_hash,
            b"package": b"PS100012",
            b"scheme": b"p2pdist-ed25519-v1",
            b"trackers": [[ANNOUNCE]],
            b"version": 3,
            b"web-seeds": [],
        }
    )
    public_key = SIGNING_KEY.public_key().public_bytes_raw()
    block = {b"key": public_key, b"signature": SIGNING_KEY.sign(message)}
    data = bencodepy.encode({b"announce": ANNOUNCE, b"info": info, b"p2pdist": block})
    out["valid_signed_private.torrent"] = (
        data,
        {
            "info_hash": info_hash.hex(),
            "files": [[["PS100012", "setup.msi"], 50_000, False]],
            "trackers": [[ANNOUNCE.decode()]],
            "web_seeds": [],
            "private": True,
            "package": ["PS100012", 3],
            "signed_by": public_key.hex(),
        },
    )
    return out


def invalid() -> dict[str, tuple[bytes, str, str, int | None]]:
    """name -> (bytes, error class, message substring, byte offset for BencodeError)."""
    B, M = "BencodeError", "MetainfoError"
    hashes20 = pieces(1)
    vectors: dict[str, tuple[bytes, str, str, int | None]] = {
        # --- not bencode at all, or not canonical bencode
        "bencode_html.torrent": (b"<html><body>404 Not Found</body></html>", B, "top-level value is not a dictionary", 0),
        "bencode_empty.torrent": (b"", B, "truncated input", 0),
        "bencode_truncated.torrent": (GOOD[: len(GOOD) // 2], B, "truncated string", None),
        "bencode_trailing_garbage.torrent": (GOOD + b"\r\n", B, "trailing data after the value", len(GOOD)),
        "bencode_top_level_list.torrent": (bencodepy.encode([single()]), B, "top-level value is not a dictionary", 0),
        "bencode_unsorted_keys.torrent": (b"d4:info" + GOOD_INFO + b"8:announce3:urle", B, "unsorted dictionary key b'announce'", 7 + len(GOOD_INFO)),
        "bencode_duplicate_key.torrent": (DUPLICATE_NAME, B, "duplicate dictionary key b'name'", DUPLICATE_NAME.index(b"4:name1:b")),
        "bencode_duplicate_top_key.torrent": (b"d4:info" + GOOD_INFO + b"4:info" + GOOD_INFO + b"e", B, "duplicate dictionary key b'info'", 7 + len(GOOD_INFO)),
        "bencode_non_string_key.torrent": (b"di1e" + GOOD_INFO + b"e", B, "dictionary key is not a string", 1),
        "bencode_leading_zero_int.torrent": (b"d4:infod6:lengthi05e4:name1:xee", B, "leading zero", 17),
        "bencode_negative_zero.torrent": (b"d4:infod6:lengthi-0e4:name1:xee", B, "negative zero", 17),
        "bencode_leading_zero_strlen.torrent": (b"d4:infod04:name1:xee", B, "string length with leading zero", 8),
        "bencode_negative_strlen.torrent": (b"d4:infod4:name-1:xee", B, "unexpected byte b'-'", 14),
        "bencode_huge_strlen.torrent": (b"d4:info999999999999:" + b"x" * 16, B, "string of 999999999999 bytes exceeds", 7),
        "bencode_huge_integer.torrent": (b"d4:infod6:lengthi" + b"9" * 40 + b"ee", B, "integer longer than 32 digits", 17),
        "bencode_deep_nesting.torrent": (b"d7:comment" + b"l" * 200 + b"e" * 200 + b"4:info" + GOOD_INFO + b"e", B, "nesting deeper than 64", 73),
        # --- bencode, but not a torrent we accept
        "no_info.torrent": (bencodepy.encode({b"announce": ANNOUNCE}), M, "torrent has no info dictionary", None),
        "info_not_dict.torrent": (torrent([b"x"]), M, "torrent has no info dictionary", None),
        "piece_length_not_power_of_two.torrent": (torrent(single(**{"piece length": 20_000})), M, "piece length 20000 is not a power of two >= 16384", None),
        "piece_length_too_small.torrent": (torrent(single(**{"piece length": 8192})), M, "piece length 8192 is not a power of two", None),
        "pieces_not_multiple_of_20.torrent": (torrent(single(pieces=pieces(40_000) + b"x")), M, "not a multiple of 20", None),
        "pieces_count_mismatch.torrent": (torrent(single(length=40_000, pieces=hashes20)), M, "holds 1 hashes but 40000 bytes need 3 pieces", None),
        "too_many_pieces.torrent": (torrent(single(length=2**46, pieces=hashes20)), M, "more than 2000000", None),
        "zero_length.torrent": (torrent(single(length=0, pieces=b"")), M, "total length 0", None),
        "negative_length.torrent": (torrent(single(length=-5, pieces=b"")), M, "info.length is -5, below 0", None),
        "length_and_files.torrent": (torrent({**single(), b"files": [{b"length": 1, b"path": [b"a"]}]}), M, "both 'length' and 'files'", None),
        "private_flag_2.torrent": (torrent(single(private=2)), M, "info.private must be 0 or 1", None),
        # --- names that would escape the package folder or break on Windows
        "path_dotdot.torrent": (torrent(multi(([b"..", b"..", b"..", b"Windows", b"System32", b"evil.dll"], 10))), M, "'..' is not allowed", None),
        "path_dot.torrent": (torrent(multi(([b".", b"setup.exe"], 10))), M, "'.' is not allowed", None),
        "path_absolute_empty_part.torrent": (torrent(multi(([b"", b"etc", b"passwd"], 10))), M, "empty path component", None),
        "path_absolute_slash.torrent": (torrent(multi(([b"/etc/cron.d/evil"], 10))), M, "a path separator", None),
        "path_backslash.torrent": (torrent(multi(([b"..\\..\\Windows\\evil.dll"], 10))), M, "a path separator", None),
        "path_unc.torrent": (torrent(multi(([b"\\\\attacker\\share\\x"], 10))), M, "a path separator", None),
        "path_drive_letter.torrent": (torrent(multi(([b"C:", b"Windows", b"evil.dll"], 10))), M, "drive letter or stream name", None),
        "path_stream_name.torrent": (torrent(multi(([b"setup.exe:hidden"], 10))), M, "drive letter or stream name", None),
        "path_nul.torrent": (torrent(multi(([b"setup.exe\x00.txt"], 10))), M, "a NUL character", None),
        "path_control_char.torrent": (torrent(multi(([b"readme\x1b[2J.txt"], 10))), M, "a control character", None),
        "path_reserved_con.torrent": (torrent(multi(([b"CON"], 10))), M, "'CON' is a reserved device name", None),
        "path_reserved_aux_ext.torrent": (torrent(multi(([b"docs", b"aux.txt"], 10))), M, "'aux.txt' is a reserved device name", None),
        "path_reserved_com1_folder.torrent": (torrent(multi(([b"com1", b"a.txt"], 10))), M, "reserved device name", None),
        "path_reserved_superscript.torrent": (torrent(multi((["LPT\u00b9.log".encode()], 10))), M, "reserved device name", None),
        "path_trailing_dot.torrent": (torrent(multi(([b"setup.exe."], 10))), M, "ends with a dot or space", None),
        "path_trailing_space.torrent": (torrent(multi(([b"Program Files ", b"a"], 10))), M, "ends with a dot or space", None),
        "path_wildcard.torrent": (torrent(multi(([b"*.dll"], 10))), M, "not allowed in Windows file names", None),
        "path_case_collision.torrent": (torrent(multi(([b"Setup.exe"], 10), ([b"SETUP.EXE"], 20))), M, "collide (names differ only in case)", None),
        "path_file_folder_collision.torrent": (torrent(multi(([b"data"], 10), ([b"Data", b"a.cab"], 20))), M, "has the name of a folder", None),
        "path_too_deep.torrent": (torrent(multi(([b"d"] * 40, 10))), M, "deeper than 32 folders", None),
        "path_component_too_long.torrent": (torrent(multi(([b"x" * 300], 10))), M, "longer than 255 bytes", None),
        "path_invalid_utf8.torrent": (torrent(multi(([b"caf\xe9.txt"], 10))), M, "is not valid UTF-8", None),
        "path_utf8_variant_hostile.torrent": (torrent(multi({b"length": 10, b"path": [b"ok.txt"], b"path.utf-8": [b"..", b"evil"]})), M, "'..' is not allowed", None),
        "pad_file_escape.torrent": (torrent(multi(([b"a"], 10), {b"attr": b"p", b"length": 6, b"path": [b"..", b"..", b"evil"]})), M, "'..' is not allowed", None),
        "name_dotdot.torrent": (torrent(single(name=b"..")), M, "info.name: path component '..' is not allowed", None),
        "name_separator.torrent": (torrent(single(name=b"..\\..\\evil.exe")), M, "info.name", None),
        "name_reserved.torrent": (torrent(single(name=b"nul.msi")), M, "reserved device name", None),
        "name_utf8_variant_hostile.torrent": (torrent(single(**{"name.utf-8": b"../evil"})), M, "a path separator", None),
        # --- top-level fields and p2pdist blocks
        "announce_header_injection.torrent": (torrent(single(), announce=b"http://t/a\r\nX-Evil: 1"), M, "contains spaces or control characters", None),
        "announce_list_not_list.torrent": (torrent(single(), announce_list=ANNOUNCE), M, "announce-list is not a list", None),
        "url_list_wrong_type.torrent": (torrent(single(), url_list={b"a": b"b"}), M, "url-list is not a string or list", None),
        "signature_key_short.torrent": (torrent(single(), p2pdist={b"key": b"k" * 31, b"signature": b"s" * 64}), M, "32-byte Ed25519 public key", None),
        "signature_short.torrent": (torrent(single(), p2pdist={b"key": b"k" * 32, b"signature": b"s" * 10}), M, "64-byte Ed25519 signature", None),
        "package_id_newline.torrent": (torrent(single(p2pdist={b"package": b"PS100012\n", b"version": 1})), M, "is not a PackageID", None),
        "package_version_negative.torrent": (torrent(single(p2pdist={b"package": b"PS100012", b"version": -1})), M, "package version -1 out of range", None),
    }
    return vectors


def build() -> tuple[dict[str, bytes], dict[str, Any]]:
    """Every vector's bytes and the manifest, without touching the disk."""
    files: dict[str, bytes] = {}
    manifest: dict[str, Any] = {"valid": {}, "invalid": {}}
    for name, (data, facts) in valid().items():
        files[name] = data
        manifest["valid"][name] = facts
    for name, (data, error, message, offset) in invalid().items():
        files[name] = data
        entry: dict[str, Any] = {"error": error, "message": message}
        if offset is not None:
            entry["offset"] = offset
        manifest["invalid"][name] = entry
    return files, manifest


def manifest_text(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(out: Path = OUT) -> int:
    files, manifest = build()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.torrent"):
        if stale.name not in files:
            stale.unlink()
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / "expected.json").write_text(manifest_text(manifest), encoding="utf-8")
    print(f"wrote {len(files)} vectors to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
