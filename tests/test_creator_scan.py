"""Scanning a package folder: order, excludes, symlinks and names a torrent may not carry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from p2pdist.creator.scan import Excludes, scan_path
from p2pdist.errors import InputError


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_folder_becomes_sorted_multi_file_source_named_after_it(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "Office", {"setup.exe": b"x" * 10, "a/z.txt": b"1", "a-b/c.txt": b"22", "a/empty": b""})
    source = scan_path(root)
    assert source.name == "Office"
    assert source.multi_file
    assert [f.torrent_path for f in source.files] == [
        ("Office", "a", "empty"),
        ("Office", "a", "z.txt"),
        ("Office", "a-b", "c.txt"),
        ("Office", "setup.exe"),
    ]
    assert source.total_size == 13
    assert source.files[1].relpath == "a/z.txt"
    assert source.files[1].disk_path == root / "a" / "z.txt"


def test_single_file_is_a_single_file_source(tmp_path: Path) -> None:
    path = tmp_path / "tool.msi"
    path.write_bytes(b"abc")
    source = scan_path(path)
    assert not source.multi_file
    assert [(f.torrent_path, f.size) for f in source.files] == [(("tool.msi",), 3)]


def test_excludes_match_names_at_any_depth_and_paths_without_case(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "pkg",
        {
            "keep.txt": b"k",
            "x.tmp": b"t",
            "deep/er/y.TMP": b"t",
            "Thumbs.db": b"t",
            "logs/a.log": b"l",
            "sub/big.bin": b"b",
            "other/big.bin": b"b",
        },
    )
    source = scan_path(root, ["*.tmp", "THUMBS.DB", "logs", "sub/*.bin"])
    assert [f.relpath for f in source.files] == ["keep.txt", "other/big.bin"]


def test_excludes_pattern_kinds() -> None:
    excludes = Excludes(["*.log", "cache/*"])
    assert excludes.match("a/b/x.LOG")
    assert excludes.match("cache/file")
    assert not excludes.match("a/cache/file")
    assert not excludes.match("a/b/x.txt")


def test_symlinks_are_followed_inside_the_folder_and_skipped_when_they_leave(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"do not share")
    root = make_tree(tmp_path / "pkg", {"real/data.bin": b"12345"})
    (root / "escape.txt").symlink_to(outside)
    (root / "alias.bin").symlink_to(root / "real" / "data.bin")
    (root / "real" / "loop").symlink_to(root)
    (root / "dangling").symlink_to(root / "missing")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "other.txt").write_bytes(b"nope")
    (root / "outdir").symlink_to(tmp_path / "elsewhere")
    (root / "samedir").symlink_to(root / "real")
    source = scan_path(root)
    assert [f.relpath for f in source.files] == ["alias.bin", "real/data.bin", "samedir/data.bin"]
    assert source.files[0].size == 5
    notes = "\n".join(source.notes)
    assert "escape.txt: symlink leaves the folder" in notes
    assert "outdir: symlink leaves the folder" in notes
    assert "real/loop: symlink loop" in notes
    assert "samedir/loop: symlink loop" in notes
    assert "dangling: broken symlink" in notes


def test_fifos_are_left_out_with_a_note(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pkg", {"a.txt": b"a"})
    os.mkfifo(root / "pipe")
    source = scan_path(root)
    assert [f.relpath for f in source.files] == ["a.txt"]
    assert any("pipe: not a regular file" in n for n in source.notes)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("CON.txt", "reserved device name"),
        ("a:b.txt", "':'"),
        ("trailing.", "ends with a dot"),
        ("what?.txt", "not allowed in Windows file names"),
    ],
)
def test_names_metainfo_would_reject_are_refused_naming_the_file(tmp_path: Path, name: str, reason: str) -> None:
    root = make_tree(tmp_path / "pkg", {"ok.txt": b"1", f"sub/{name}": b"2"})
    with pytest.raises(InputError) as caught:
        scan_path(root)
    message = str(caught.value)
    assert f"sub/{name}" in message
    assert reason in message
    assert "\n" not in message


def test_excluding_a_bad_name_lets_the_rest_through(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pkg", {"ok.txt": b"1", "nul.txt": b"2"})
    assert [f.relpath for f in scan_path(root, ["nul.txt"]).files] == ["ok.txt"]


def test_names_differing_only_in_case_collide(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pkg", {"Setup.exe": b"1", "setup.EXE": b"2"})
    with pytest.raises(InputError, match="differ only in case"):
        scan_path(root)


def test_non_utf8_file_names_are_refused(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pkg", {"ok.txt": b"1"})
    with open(os.path.join(os.fsencode(root), b"bad\xff.bin"), "wb") as handle:
        handle.write(b"x")
    with pytest.raises(InputError, match="not valid UTF-8"):
        scan_path(root)


@pytest.mark.parametrize("files", [{}, {"empty1": b"", "d/empty2": b""}])
def test_a_folder_without_data_is_refused(tmp_path: Path, files: dict[str, bytes]) -> None:
    root = make_tree(tmp_path / "pkg", files)
    root.mkdir(exist_ok=True)
    with pytest.raises(InputError, match="nothing to share"):
        scan_path(root)


def test_missing_and_empty_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        scan_path(tmp_path / "nope")
    (tmp_path / "zero").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        scan_path(tmp_path / "zero")


def test_fingerprint_changes_with_size_or_mtime(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "pkg", {"a.txt": b"1"})
    before = scan_path(root).fingerprint()
    os.utime(root / "a.txt", ns=(1_000_000_000, 1_000_000_000))
    after = scan_path(root).fingerprint()
    assert before != after
    assert after == [["a.txt", 1, 1_000_000_000]]
