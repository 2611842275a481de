"""``p2pdist create --dp``: one torrent per PackageID folder, re-runs skip what did not change."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from p2pdist.cli import main
from p2pdist.creator.share import MANIFEST_NAME
from p2pdist.metainfo import PackageIdentity, read_metainfo


def make_share(root: Path) -> Path:
    for package, files in {
        "PS100012": {"setup.exe": b"A" * 40_000, "data/cab1.cab": b"B" * 9_000},
        "ps100013": {"install.cmd": b"@echo off\r\n"},
    }.items():
        for rel, data in files.items():
            path = root / package / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    (root / "Logs").mkdir()
    (root / "Logs" / "x.log").write_bytes(b"log")
    (root / "readme.txt").write_bytes(b"not a package")
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def share(tmp_path: Path) -> Path:
    return make_share(tmp_path / "SMSPKGD$")


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    out = tmp_path / "torrents"
    out.mkdir()
    return out


def test_first_run_writes_one_torrent_per_package(capsys: pytest.CaptureFixture[str], share: Path, outdir: Path) -> None:
    code, out, err = run(capsys, "create", "--dp", str(share), "-O", str(outdir), "-w", "http://dp01/SMSPKGD$", "-t", "http://site/announce")
    assert code == 0
    assert "skipped Logs: not a PackageID folder" in err
    assert sorted(p.name for p in outdir.glob("*.torrent")) == ["PS100012.torrent", "PS100013.torrent"]
    meta = read_metainfo(str(outdir / "PS100012.torrent"))
    assert meta.info.package == PackageIdentity("PS100012", 1)
    assert meta.info.multi_file and meta.info.private
    assert [f.relpath for f in meta.info.files] == ["PS100012/data/cab1.cab", "PS100012/setup.exe"]
    # BEP 19 multi-file: the client appends "<name>/<path>", so the URL is the share itself.
    assert meta.web_seeds == ("http://dp01/SMSPKGD$/",)
    lower = read_metainfo(str(outdir / "PS100013.torrent"))
    assert lower.info.name == "ps100013" and lower.info.package == PackageIdentity("PS100013", 1)
    assert "2 created, 0 updated, 0 rewritten, 0 unchanged, 0 failed" in out


def test_rerun_skips_unchanged_and_bumps_changed_packages(capsys: pytest.CaptureFixture[str], share: Path, outdir: Path) -> None:
    assert run(capsys, "create", "--dp", str(share), "-O", str(outdir))[0] == 0
    first = read_metainfo(str(outdir / "PS100012.torrent"))
    code, out, _ = run(capsys, "create", "--dp", str(share), "-O", str(outdir))
    assert code == 0 and "0 created, 0 updated, 0 rewritten, 2 unchanged" in out
    (share / "PS100012" / "setup.exe").write_bytes(b"C" * 41_000)
    code, out, _ = run(capsys, "create", "--dp", str(share), "-O", str(outdir))
    assert code == 0
    assert "PS100012 v2 updated" in out and "PS100013 v1 unchanged" in out
    second = read_metainfo(str(outdir / "PS100012.torrent"))
    assert second.info.package == PackageIdentity("PS100012", 2)
    assert second.info_hash != first.info_hash
    manifest = json.loads((outdir / MANIFEST_NAME).read_text())
    assert manifest["packages"]["PS100012"]["version"] == 2
    assert manifest["packages"]["PS100012"]["info_hash"] == second.info_hash_hex


def test_outer_options_rewrite_under_the_same_version_and_info_hash(
    capsys: pytest.CaptureFixture[str], share: Path, outdir: Path
) -> None:
    assert run(capsys, "create", "--dp", str(share), "-O", str(outdir))[0] == 0
    before = read_metainfo(str(outdir / "PS100013.torrent"))
    code, out, _ = run(capsys, "create", "--dp", str(share), "-O", str(outdir), "-t", "http://new/announce")
    assert code == 0 and "2 rewritten" in out
    after = read_metainfo(str(outdir / "PS100013.torrent"))
    assert after.info_hash == before.info_hash
    assert after.info.package == before.info.package
    assert after.trackers == (("http://new/announce",),)


def test_version_given_applies_to_changed_packages_and_must_grow(
    capsys: pytest.CaptureFixture[str], share: Path, outdir: Path
) -> None:
    assert run(capsys, "create", "--dp", str(share), "-O", str(outdir), "--version", "5")[0] == 0
    assert read_metainfo(str(outdir / "PS100013.torrent")).info.package == PackageIdentity("PS100013", 5)
    (share / "ps100013" / "install.cmd").write_bytes(b"@echo on\r\n")
    code, _, err = run(capsys, "create", "--dp", str(share), "-O", str(outdir), "--version", "5")
    assert code == 2
    assert "PS100013: failed: --version 5 is not above version 5" in err
    code, out, _ = run(capsys, "create", "--dp", str(share), "-O", str(outdir), "--version", "6")
    assert code == 0 and "PS100013 v6 updated" in out and "PS100012 v5 unchanged" in out


def test_lost_manifest_continues_from_the_published_version(
    capsys: pytest.CaptureFixture[str], share: Path, outdir: Path
) -> None:
    assert run(capsys, "create", "--dp", str(share), "-O", str(outdir))[0] == 0
    (outdir / MANIFEST_NAME).write_text("{broken")
    code, out, err = run(capsys, "create", "--dp", str(share), "-O", str(outdir))
    assert code == 0
    assert "ignoring unreadable manifest" in err
    assert "PS100012 v2 updated" in out
    assert read_metainfo(str(outdir / "PS100012.torrent")).info.package == PackageIdentity("PS100012", 2)


def test_one_bad_package_does_not_stop_the_others(capsys: pytest.CaptureFixture[str], share: Path, outdir: Path) -> None:
    (share / "PS100012" / "AUX.dll").write_bytes(b"x")
    code, out, err = run(capsys, "create", "--dp", str(share), "-O", str(outdir))
    assert code == 3
    assert "PS100012: failed:" in err and "AUX.dll" in err
    assert (outdir / "PS100013.torrent").is_file()
    assert not (outdir / "PS100012.torrent").exists()
    assert "1 created" in out and "1 failed" in out


def test_signed_share_torrents_and_a_new_key_rewrites(capsys: pytest.CaptureFixture[str], share: Path, outdir: Path, tmp_path: Path) -> None:
    assert run(capsys, "keygen", "-o", str(tmp_path / "k1"))[0] == 0
    assert run(capsys, "keygen", "-o", str(tmp_path / "k2"))[0] == 0
    assert run(capsys, "create", "--dp", str(share), "-O", str(outdir), "--sign-key", str(tmp_path / "k1"))[0] == 0
    code, out, _ = run(capsys, "show", str(outdir / "PS100012.torrent"), "--key", str(tmp_path / "k1.pub"))
    assert code == 0 and "valid" in out
    code, out, _ = run(capsys, "create", "--dp", str(share), "-O", str(outdir), "--sign-key", str(tmp_path / "k2"))
    assert "2 rewritten" in out
    assert run(capsys, "show", str(outdir / "PS100012.torrent"), "--key", str(tmp_path / "k2.pub"))[0] == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pkg", "PS100012"], "--pkg is taken from each folder"),
        (["-o", "x.torrent"], "-o FILE is for one torrent"),
        (["somepath"], "either PATH or --dp"),
    ],
)
def test_dp_argument_mistakes_are_usage_errors(
    capsys: pytest.CaptureFixture[str], share: Path, outdir: Path, extra: list[str], message: str
) -> None:
    code, _, err = run(capsys, "create", "--dp", str(share), "-O", str(outdir), *extra)
    assert code == 2 and message in err


def test_missing_share_and_outdir(capsys: pytest.CaptureFixture[str], tmp_path: Path, outdir: Path, share: Path) -> None:
    assert run(capsys, "create", "--dp", str(tmp_path / "none"), "-O", str(outdir))[0] == 3
    assert run(capsys, "create", "--dp", str(share), "-O", str(tmp_path / "none"))[0] == 4
    assert run(capsys, "create", "--dp", str(share))[0] == 2


def test_manifest_records_path_size_mtime(capsys: pytest.CaptureFixture[str], share: Path, outdir: Path) -> None:
    os.utime(share / "ps100013" / "install.cmd", ns=(7_000, 7_000))
    assert run(capsys, "create", "--dp", str(share), "-O", str(outdir))[0] == 0
    entry = json.loads((outdir / MANIFEST_NAME).read_text())["packages"]["PS100013"]
    assert entry["content"]["files"] == [["install.cmd", 11, 7_000]]


def test_progress_bars_name_each_package_on_a_terminal(
    capsys: pytest.CaptureFixture[str], share: Path, outdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, _, err = run(capsys, "create", "--dp", str(share), "-O", str(outdir))
    assert code == 0
    assert "PS100012" in err and "PS100013" in err
    assert "B/s" in err or "B [" in err
