"""The commands as an admin runs them: exit codes, one-line errors, show/keygen/sign, Ctrl-C."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import stat
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from p2pdist import bencode
from p2pdist.cli import main
from p2pdist.metainfo import read_metainfo


def p2pdist(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pdist", *argv], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def package(tmp_path: Path) -> Path:
    root = tmp_path / "PS100012"
    (root / "x86").mkdir(parents=True)
    (root / "setup.exe").write_bytes(b"S" * 70_000)
    (root / "x86" / "driver.sys").write_bytes(b"D" * 5_000)
    return root


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("p2pdist: error: ")
    return lines[0]


# -- exit codes, as a subprocess -------------------------------------------------------------


def test_exit_codes_and_one_line_errors(tmp_path: Path, package: Path) -> None:
    bad_size = p2pdist("create", str(package), "-o", str(tmp_path / "a.torrent"), "--piece-size", "300K")
    assert bad_size.returncode == 2
    assert "piece size '300K'" in one_error_line(bad_size.stderr)

    missing = p2pdist("create", str(tmp_path / "nowhere"), "-o", str(tmp_path / "b.torrent"))
    assert missing.returncode == 3
    assert "does not exist" in one_error_line(missing.stderr)

    unwritable = p2pdist("create", str(package), "-o", str(tmp_path / "no" / "such" / "c.torrent"))
    assert unwritable.returncode == 4
    assert "does not exist" in one_error_line(unwritable.stderr)


def test_a_bad_file_name_is_one_input_error_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, package: Path) -> None:
    (package / "sub").mkdir()
    (package / "sub" / "LPT1.txt").write_bytes(b"x")
    code, _, err = run(capsys, "create", str(package), "-o", str(tmp_path / "d.torrent"))
    assert code == 3
    assert "sub/LPT1.txt" in one_error_line(err)
    assert not list(tmp_path.glob("*.torrent"))


def test_success_prints_one_line_and_stays_quiet_when_piped(capsys: pytest.CaptureFixture[str], tmp_path: Path, package: Path) -> None:
    result = p2pdist("create", str(package), "-t", "http://site/announce", "--pkg", "ps100012", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = tmp_path / "PS100012.torrent"
    assert result.stdout.startswith(f"wrote {out.name}: 2 files")
    assert read_metainfo(str(out)).info_hash_hex in result.stdout
    before = out.read_bytes()
    code, _, err = run(capsys, "create", str(package), "-o", str(out))
    assert code == 4
    assert "--force" in one_error_line(err)
    assert out.read_bytes() == before


def test_ctrl_c_while_hashing_leaves_no_output_and_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    """A large sparse file keeps the hashers busy; stderr on a pty shows the bar, SIGINT ends it."""
    big = tmp_path / "in" / "huge.img"
    big.parent.mkdir()
    with open(big, "wb") as handle:
        handle.truncate(64 << 30)
    outdir = tmp_path / "out"
    outdir.mkdir()
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a pty starts 0 columns wide
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2pdist", "create", str(big), "-o", str(outdir / "huge.torrent")],
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"B/s" not in seen and b"%|" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                seen += os.read(master, 4096)
        assert b"huge.img" in seen, seen
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        try:
            while select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 4096)
        except OSError:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        os.close(master)
    assert proc.returncode == 130
    assert b"Traceback" not in seen
    assert b"p2pdist: error: interrupted" in seen
    assert list(outdir.iterdir()) == []


# -- create options, in-process --------------------------------------------------------------


def test_tracker_tiers_web_seeds_comment_and_no_date(capsys: pytest.CaptureFixture[str], tmp_path: Path, package: Path) -> None:
    out = tmp_path / "t.torrent"
    code, _, _ = run(
        capsys, "create", str(package), "-o", str(out),
        "-t", "http://a/announce,http://b/announce", "-t", "udp://c:6969",
        "-w", "http://dp/pkgs/", "-w", "https://dp2/pkgs/", "-c", "Office 2003", "--no-date", "--no-private",
        "--piece-size", "32K",
    )
    assert code == 0
    meta = read_metainfo(str(out))
    assert meta.trackers == (("http://a/announce", "http://b/announce"), ("udp://c:6969",))
    assert meta.web_seeds == ("http://dp/pkgs/", "https://dp2/pkgs/")
    assert meta.comment == "Office 2003"
    assert meta.creation_date is None
    assert not meta.info.private
    assert meta.info.piece_length == 32 * 1024
    assert meta.info.package is None


def test_same_content_same_info_hash_across_runs_and_outer_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, package: Path
) -> None:
    run(capsys, "create", str(package), "-o", str(tmp_path / "1.torrent"), "--pkg", "PS100012", "--version", "4")
    os.utime(package / "setup.exe", ns=(1, 1))
    run(capsys, "create", str(package), "-o", str(tmp_path / "2.torrent"), "--pkg", "PS100012", "--version", "4",
        "-t", "http://x/announce", "-c", "other", "--threads", "1")
    first, second = read_metainfo(str(tmp_path / "1.torrent")), read_metainfo(str(tmp_path / "2.torrent"))
    assert first.info_hash == second.info_hash
    assert first.raw_info == second.raw_info
    assert b"date" not in first.raw_info


def test_excludes_on_the_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, package: Path) -> None:
    (package / "notes.tmp").write_bytes(b"t")
    code, _, _ = run(capsys, "create", str(package), "-o", str(tmp_path / "e.torrent"), "-e", "*.TMP", "-e", "x86")
    assert code == 0
    assert [f.relpath for f in read_metainfo(str(tmp_path / "e.torrent")).info.files] == ["PS100012/setup.exe"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--version", "2"], "--version needs --pkg"),
        (["--pkg", "NOTAPKG"], "is not a PackageID"),
        (["--sign-key", "k"], "--sign-key needs --pkg"),
        (["-t", "ftp://x/y"], "is not a http/https/udp URL"),
        (["-w", "udp://x/y"], "is not a http/https URL"),
        (["--threads", "0"], "--threads"),
        (["-O", "somewhere"], "-O/--output-dir goes with --dp"),
    ],
)
def test_argument_mistakes_are_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, package: Path, argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, "create", str(package), "-o", str(tmp_path / "u.torrent"), *argv)
    assert code == 2
    assert message in err
    assert not (tmp_path / "u.torrent").exists()


def test_create_without_path_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "create")
    assert code == 2 and "needs PATH" in err


def test_single_file_torrent_via_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "hotfix.msu"
    path.write_bytes(b"h" * 1000)
    assert run(capsys, "create", str(path), "-o", str(tmp_path / "h.torrent"))[0] == 0
    meta = read_metainfo(str(tmp_path / "h.torrent"))
    assert not meta.info.multi_file and meta.info.name == "hotfix.msu" and meta.info.private


# -- show, keygen, sign ----------------------------------------------------------------------


def test_show_text_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path, package: Path) -> None:
    out = tmp_path / "s.torrent"
    run(capsys, "create", str(package), "-o", str(out), "--pkg", "PS100012", "--version", "3", "-t", "http://t/announce",
        "-w", "http://dp/", "--piece-size", "16K")
    meta = read_metainfo(str(out))
    code, text, _ = run(capsys, "show", str(out))
    assert code == 0
    for expected in ("PS100012 v3", meta.info_hash_hex, "5 x 16 KiB", "private:", "yes", "http://t/announce", "http://dp/", "unsigned",
                     "PS100012/x86/driver.sys"):
        assert expected in text
    code, raw, _ = run(capsys, "show", "--json", str(out))
    data = json.loads(raw)
    assert data["info_hash"] == meta.info_hash_hex
    assert data["package"] == {"id": "PS100012", "version": 3}
    assert data["num_pieces"] == 5 and data["piece_length"] == 16384
    assert data["files"] == [{"path": "PS100012/setup.exe", "length": 70000}, {"path": "PS100012/x86/driver.sys", "length": 5000}]
    assert data["trackers"] == [["http://t/announce"]] and data["private"] is True
    assert data["signature"]["status"] == "unsigned"


def test_show_refuses_what_is_not_a_torrent(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    junk = tmp_path / "junk.torrent"
    junk.write_bytes(b"d4:infoi1ee")
    code, _, err = run(capsys, "show", str(junk))
    assert code == 3 and "not a valid torrent" in err
    assert run(capsys, "show", str(tmp_path / "missing.torrent"))[0] == 3


def test_keygen_writes_a_private_0600_key_and_a_hex_public_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    key = tmp_path / "site.key"
    code, out, _ = run(capsys, "keygen", "-o", str(key))
    assert code == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    public = (tmp_path / "site.key.pub").read_text().strip()
    assert len(bytes.fromhex(public)) == 32
    assert public[:16] in out
    before = key.read_bytes()
    code, _, err = run(capsys, "keygen", "-o", str(key))
    assert code == 4 and "refusing to overwrite" in err
    assert key.read_bytes() == before


def test_sign_then_show_reports_valid_untrusted_and_bad(capsys: pytest.CaptureFixture[str], tmp_path: Path, package: Path) -> None:
    run(capsys, "keygen", "-o", str(tmp_path / "good"))
    run(capsys, "keygen", "-o", str(tmp_path / "other"))
    torrent = tmp_path / "p.torrent"
    run(capsys, "create", str(package), "-o", str(torrent), "--pkg", "PS100012")
    unsigned_hash = read_metainfo(str(torrent)).info_hash
    code, out, _ = run(capsys, "sign", str(torrent), "--sign-key", str(tmp_path / "good"))
    assert code == 0 and "signed by" in out
    meta = read_metainfo(str(torrent))
    assert meta.info_hash == unsigned_hash and meta.signature is not None

    code, out, _ = run(capsys, "show", str(torrent))
    assert code == 0 and f"signed by {meta.signature.public_key[:8].hex()}, not verified" in out
    code, out, _ = run(capsys, "show", str(torrent), "--key", str(tmp_path / "good.pub"))
    assert code == 0 and "signature:" in out and "valid" in out
    code, out, err = run(capsys, "show", "--json", str(torrent), "--key", str(tmp_path / "other.pub"))
    assert code == 6 and json.loads(out)["signature"]["status"] == "untrusted"
    assert "signature untrusted" in err

    top = bencode.decode(torrent.read_bytes())
    signature = bytearray(top[b"p2pdist"][b"signature"])
    signature[0] ^= 1
    top[b"p2pdist"][b"signature"] = bytes(signature)
    forged = tmp_path / "forged.torrent"
    forged.write_bytes(bencode.encode(top))
    code, out, _ = run(capsys, "show", "--json", str(forged), "--key", str(tmp_path / "good.pub"))
    assert code == 6 and json.loads(out)["signature"]["status"] == "bad"


def test_sign_to_another_file_and_refusals(capsys: pytest.CaptureFixture[str], tmp_path: Path, package: Path) -> None:
    run(capsys, "keygen", "-o", str(tmp_path / "k"))
    plain = tmp_path / "plain.torrent"
    run(capsys, "create", str(package), "-o", str(plain))
    code, _, err = run(capsys, "sign", str(plain), "--sign-key", str(tmp_path / "k"))
    assert code == 3 and "no package identity" in err
    pkg = tmp_path / "pkg.torrent"
    run(capsys, "create", str(package), "-o", str(pkg), "--pkg", "PS100012")
    original = pkg.read_bytes()
    code, _, _ = run(capsys, "sign", str(pkg), "--sign-key", str(tmp_path / "k"), "-o", str(tmp_path / "signed.torrent"))
    assert code == 0
    assert pkg.read_bytes() == original
    assert read_metainfo(str(tmp_path / "signed.torrent")).signature is not None
    code, _, err = run(capsys, "sign", str(pkg), "--sign-key", str(tmp_path / "k.pub"))
    assert code == 3 and "PEM" in err


def test_create_with_sign_key(capsys: pytest.CaptureFixture[str], tmp_path: Path, package: Path) -> None:
    run(capsys, "keygen", "-o", str(tmp_path / "k"))
    out = tmp_path / "s.torrent"
    assert run(capsys, "create", str(package), "-o", str(out), "--pkg", "PS100012", "--sign-key", str(tmp_path / "k"))[0] == 0
    assert run(capsys, "show", str(out), "--key", str(tmp_path / "k.pub"))[0] == 0
    code, _, err = run(capsys, "create", str(package), "-o", str(tmp_path / "x.torrent"), "--pkg", "PS100012",
                       "--sign-key", str(tmp_path / "absent"))
    assert code == 3 and "absent" in err


# -- the admins' flags from mktorrent and torf ------------------------------------------------


def test_mktorrent_and_torf_flags(capsys: pytest.CaptureFixture[str], tmp_path: Path, package: Path) -> None:
    out = tmp_path / "x.torrent"
    code, stdout, err = run(
        capsys, "create", str(package), "-o", str(out), "-p", "-n", "Office 2007 SP2", "-s", "HQ-build",
        "--nodate", "-j", "--max-piece-size", "16K", "-t", "http://hq/announce", "--pkg", "PS100012",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    meta = read_metainfo(str(out))
    assert summary["torrent"] == str(out) and summary["info_hash"] == meta.info_hash_hex
    assert summary["name"] == meta.info.name == "Office 2007 SP2"
    assert summary["private"] is meta.info.private is True
    assert summary["piece_length"] == meta.info.piece_length == 16384  # the ceiling held the auto choice
    assert (summary["package_id"], summary["version"], summary["files"]) == ("PS100012", 1, 2)
    assert meta.creation_date is None
    info = bencode.decode(meta.raw_info)
    assert info[b"source"] == b"HQ-build"
    # The source tag gives the same files another info-hash.
    code, plain, _ = run(capsys, "create", str(package), "-o", str(tmp_path / "y.torrent"), "-n", "Office 2007 SP2", "--nodate", "-j",
                         "--max-piece-size", "16K", "--pkg", "PS100012")  # fmt: skip
    assert code == 0 and json.loads(plain)["info_hash"] != summary["info_hash"]


def test_bad_name_and_piece_sizes_are_usage_errors(tmp_path: Path, package: Path) -> None:
    for argv in (["-n", "a/b"], ["-n", ".."], ["--piece-size", "1M", "--max-piece-size", "256K"], ["--max-piece-size", "3K"]):
        result = p2pdist("create", str(package), "-o", str(tmp_path / "z.torrent"), *argv)
        assert result.returncode == 2, (argv, result.stderr)
        one_error_line(result.stderr)
    assert not (tmp_path / "z.torrent").exists()


def test_a_web_seed_that_doubles_the_package_folder_is_warned_about(capsys: pytest.CaptureFixture[str], tmp_path: Path, package: Path) -> None:
    code, _, err = run(capsys, "create", str(package), "-o", str(tmp_path / "w.torrent"), "-w", "http://dp01/SMSPKGD$/PS100012/")
    assert code == 0
    assert "already ends with the package folder PS100012/" in err and "http://dp01/SMSPKGD$/" in err
    code, _, err = run(capsys, "create", str(package), "-o", str(tmp_path / "v.torrent"), "-w", "http://dp01/SMSPKGD$/")
    assert code == 0 and "already ends" not in err
