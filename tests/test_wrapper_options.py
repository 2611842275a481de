"""The wrapper's command line, package resolution, exit codes and log lines (no processes, no agent)."""

from __future__ import annotations

import json
import os
import re
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pdist.errors import UsageError
from p2pdist.wrapper.exitcodes import (
    EXIT_INTERNAL,
    EXIT_NO_PACKAGE,
    EXIT_NOT_FOUND,
    EXIT_NOT_PUBLISHED,
    EXIT_USAGE,
    RETRY_DEFAULT,
    SUCCESS_CODES,
    check_retry_code,
    exit_status,
    from_returncode,
    visible,
)
from p2pdist.wrapper.log import LOG_ENV, LogRecord, append_line, default_log_path, format_line, write_record
from p2pdist.wrapper.options import scan_options
from p2pdist.wrapper.resolve import (
    Invocation,
    NoPackageId,
    package_from_directory,
    parse_command_line,
    resolve_package,
    start_in,
)

# ---------------------------------------------------------------- option parsing


def test_options_stop_at_the_first_word_that_is_not_an_option() -> None:
    inv = parse_command_line(["--pkg", "ps100012", "--retry-code=1619", "msiexec", "/i", "office.msi", "--pkg", "X"])
    assert inv.package_id == "PS100012"
    assert inv.retry_code == 1619
    assert inv.command == ("msiexec", "/i", "office.msi", "--pkg", "X")
    assert inv.consumed == 3


def test_double_dash_ends_options_and_lets_a_command_start_with_dashes() -> None:
    inv = parse_command_line(["--wait", "30", "--", "--weird-installer", "-x"])
    assert inv.wait == 30.0
    assert inv.command == ("--weird-installer", "-x")
    assert inv.consumed == 3


def test_single_dash_and_slash_words_belong_to_the_command() -> None:
    assert parse_command_line(["-x", "--pkg", "PS100012"]).command == ("-x", "--pkg", "PS100012")
    assert parse_command_line(["/qn"]).command == ("/qn",)


def test_all_options_parsed() -> None:
    inv = parse_command_line(
        ["--pkg", "PS100012", "--version", "3", "--wait", "2.5", "--agent", "unix:/run/a.sock",
         "--token-file", "/t", "--log", "/l", "setup.exe"]
    )  # fmt: skip
    assert (inv.package_id, inv.version, inv.wait, inv.agent, inv.token_file, inv.log) == (
        "PS100012", 3, 2.5, "unix:/run/a.sock", "/t", "/l",
    )  # fmt: skip
    assert inv.retry_code == RETRY_DEFAULT
    assert (inv.unpublished_code, inv.unpublished_grace) == (EXIT_NOT_PUBLISHED, 86400.0)
    assert parse_command_line(["--help"]).help
    chosen = parse_command_line(["--unpublished-code", "1603", "--unpublished-grace=3600", "setup.exe"])
    assert (chosen.unpublished_code, chosen.unpublished_grace, chosen.command) == (1603, 3600.0, ("setup.exe",))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no command"),
        (["--pkg", "PS100012"], "no command"),
        (["--pkg"], "needs a value"),
        (["--bogus", "x", "cmd"], "unknown option '--bogus'"),
        (["--pkg", "NOTAPKG", "cmd"], "not a PackageID"),
        (["--pkg", "PS100012", "--pkg", "PS100013", "cmd"], "given twice"),
        (["--version", "-1", "cmd"], "between 0"),
        (["--version", "three", "cmd"], "whole number"),
        (["--retry-code", "0", "cmd"], "between 1"),
        (["--retry-code", "3010", "cmd"], "success code"),
        (["--retry-code", "7701", "cmd"], "wrapper's own"),
        (["--retry-code", "7705", "cmd"], "wrapper's own"),
        (["--unpublished-code", "0", "cmd"], "between 1"),
        (["--unpublished-code", "1641", "cmd"], "success code"),
        (["--unpublished-code", "7703", "cmd"], "wrapper's own"),
        (["--unpublished-code", "1618", "cmd"], "reads as the retry code"),
        (["--retry-code", "1008", "--unpublished-code", "1008", "cmd"], "reads as the retry code"),
        (["--unpublished-grace", "-5", "cmd"], "between 0"),
        (["--unpublished-grace", "9999999999", "cmd"], "between 0"),
        (["--wait", "-1", "cmd"], "between 0"),
        (["--wait", "nan", "cmd"], "between 0"),
        (["--wait", "soon", "cmd"], "seconds"),
        (["--agent", "tcp://x", "cmd"], "--agent"),
        (["--log=", "cmd"], "file name"),
        (["--help=yes", "cmd"], "takes no value"),
    ],
)
def test_bad_usage_is_a_usage_error(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_command_line(argv)


def test_retry_code_that_reads_as_zero_on_posix_is_refused_there_only() -> None:
    with pytest.raises(ValueError, match="8-bit"):
        check_retry_code(512, posix=True)
    assert check_retry_code(512, posix=False) == 512


OPTION_PAIRS = st.sampled_from(
    [["--pkg", "PS100012"], ["--version", "7"], ["--retry-code", "1618"], ["--wait=1"],
     ["--agent", "unix:/x"], ["--log", "f"]]
)  # fmt: skip
ANY_WORD = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    options=st.lists(OPTION_PAIRS, max_size=4, unique_by=lambda pair: pair[0].split("=")[0]),
    first=ANY_WORD.filter(lambda word: not word.startswith("--")).filter(bool),
    rest=st.lists(ANY_WORD, max_size=8),
)
def test_any_installer_argv_after_the_options_comes_through_unchanged(
    options: list[list[str]], first: str, rest: list[str]
) -> None:
    argv = [word for pair in options for word in pair] + [first, *rest]
    inv = parse_command_line(argv)
    assert inv.command == (first, *rest)
    assert argv[inv.consumed :] == [first, *rest]


@settings(max_examples=100, deadline=None)
@given(options=st.lists(OPTION_PAIRS, max_size=3, unique_by=lambda p: p[0].split("=")[0]), command=st.lists(ANY_WORD, min_size=1, max_size=6))
def test_after_double_dash_anything_is_the_command(options: list[list[str]], command: list[str]) -> None:
    argv = [word for pair in options for word in pair] + ["--", *command]
    assert parse_command_line(argv).command == tuple(command)


def test_scan_options_repeatable() -> None:
    scanned = scan_options(["--r", "1", "--r=2", "cmd"], with_value=frozenset({"--r"}), repeatable=frozenset({"--r"}))
    assert scanned.options == (("--r", "1"), ("--r", "2"))
    assert scanned.consumed == 3


# ---------------------------------------------------------------- package resolution


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("\\\\DP01\\SMSPKGD$\\PS100012\\", "PS100012"),
        ("\\\\DP01\\SMSPKGD$\\PS100012", "PS100012"),
        ("/mnt/dp/smspkgd$/ps10001a", "PS10001A"),
        ("C:\\WINDOWS\\system32\\CCM\\Cache\\PS100012.3.System", "PS100012"),
        ("C:\\WINDOWS\\system32\\CCM\\Cache\\PS100012.3.S-1-5-18", "PS100012"),
        ("C:\\Windows\\ccmcache\\1a", None),
        ("/var/tmp/PS10001", None),
        ("/var/tmp/PS1000123", None),
        ("/var/tmp/PS10001G", None),
        ("/", None),
        ("", None),
        ("PS100012.x", None),
        ("\\\\DP01\\SMSPKGD$\\PS100012\\x86\\setup", "PS100012"),  # a relative "Start in"
        ("/mnt/dp/PS100012/AB100001", "AB100001"),  # the nearest folder that names a package
    ],
)
def test_package_from_directory(path: str, expected: str | None) -> None:
    assert package_from_directory(path) == expected


def test_pkg_option_wins_over_the_directory() -> None:
    inv = parse_command_line(["--pkg", "AB100001", "setup.exe"])
    assert resolve_package(inv, "/dp/PS100012") == "AB100001"
    assert resolve_package(parse_command_line(["setup.exe"]), "/dp/PS100012") == "PS100012"


@pytest.mark.parametrize(
    ("cwd", "expected"),
    [
        ("\\\\DP01\\SMSPKGD$\\PS100012", ()),
        ("\\\\DP01\\SMSPKGD$\\PS100012\\x86\\", ("x86",)),
        ("C:\\Windows\\system32\\CCM\\Cache\\PS100012.3.System\\a b\\.\\c", ("a b", "c")),
        ("/mnt/dp/ps100012/x64", ("x64",)),
        ("/mnt/dp/PS100012/x/../..", ()),  # never above the package
        ("C:\\Windows\\system32", ()),  # started elsewhere, with --pkg
        ("/mnt/dp/AB100001/x86", ()),  # another package's folder
    ],
)
def test_start_in_is_the_part_below_the_package_folder(cwd: str, expected: tuple[str, ...]) -> None:
    assert start_in(cwd, "PS100012") == expected


def test_no_package_is_its_own_error() -> None:
    with pytest.raises(NoPackageId, match="does not name a PackageID"):
        resolve_package(Invocation(command=("setup.exe",), consumed=0), "/home/admin")


# ---------------------------------------------------------------- exit codes


def test_wrapper_codes_are_distinct_from_installer_codes_and_from_each_other() -> None:
    ours = [EXIT_USAGE, EXIT_NO_PACKAGE, EXIT_NOT_FOUND, EXIT_INTERNAL]
    installer = {0, 1, 2, 3, 5, 1602, 1603, 1605, 1618, 1619, 1620, 1624, 1633, 1638, 1641, 3010, 3011, 1604}
    assert len(set(ours) | {RETRY_DEFAULT}) == 5
    assert not set(ours) & installer
    # Still distinct, and never 0 or a shell's 126/127/128+N, where only 8 bits survive.
    low = [visible(code, posix=True) for code in [*ours, RETRY_DEFAULT]]
    assert len(set(low)) == 5 and all(0 < value < 126 for value in low)
    assert not {visible(code, posix=True) for code in ours} & {visible(c, posix=True) for c in SUCCESS_CODES}


def test_returncode_mapping() -> None:
    assert [from_returncode(code) for code in (0, 3010, 1603, -15, -9)] == [0, 3010, 1603, 143, 137]
    assert visible(1618, posix=True) == 82 and visible(1618, posix=False) == 1618


@pytest.mark.parametrize("code", [0, 1, 1618, 3010, 2**31 - 1, 0x80070643, 0xC0000005, 2**32 - 1])
def test_exit_status_keeps_every_32_bit_windows_code(code: int) -> None:
    """sys.exit takes a signed 32-bit long on Windows; the status handed to it has the code's bits."""
    status = exit_status(code, windows=True)
    assert -(2**31) <= status < 2**31 and status & 0xFFFFFFFF == code
    assert exit_status(code, windows=False) == code


# ---------------------------------------------------------------- log


def test_log_line_is_one_line_with_the_fields() -> None:
    record = LogRecord(
        outcome="retry", exit_code=1618, package="PS100012", program="msiexec",
        reason='not complete: downloading\n"42%"', progress=0.4234, duration=0.5, pid=77,
        time=datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc).timestamp(),
    )  # fmt: skip
    line = format_line(record)
    assert line.endswith("\n") and line.count("\n") == 1
    assert line.startswith("time=2025-01-02T03:04:05.678Z package=PS100012 outcome=retry exit=1618 pid=77 ")
    assert "program=msiexec progress=42.3% duration=0.500 " in line
    reason = line.split("reason=", 1)[1].rstrip("\n")
    assert json.loads(reason) == 'not complete: downloading\n"42%"'


def test_log_path_choice(tmp_path: Path) -> None:
    assert default_log_path({LOG_ENV: str(tmp_path / "x.log")}) == str(tmp_path / "x.log")
    assert Path(default_log_path({"ProgramData": "D:\\PD"}, windows=True)) == Path("D:\\PD", "p2pdist", "logs", "wrapper.log")
    assert Path(default_log_path({}, windows=False)).name == "wrapper.log"


def test_concurrent_appends_keep_lines_whole(tmp_path: Path) -> None:
    """Eight writers, fifty lines each, 3 KiB per line: every line arrives whole and once."""
    path = tmp_path / "logs" / "wrapper.log"

    def writer(n: int) -> None:
        for i in range(50):
            append_line(path, f"writer={n} line={i} " + "x" * 3000 + "\n")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    lines = path.read_text().splitlines()
    assert len(lines) == 400
    assert all(re.fullmatch(r"writer=\d line=\d+ x{3000}", line) for line in lines)
    assert len(set(lines)) == 400


def test_unwritable_log_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    problem = write_record(blocker / "sub" / "w.log", LogRecord(outcome="ran", exit_code=0))
    assert problem is not None and "cannot write the wrapper log" in problem
    assert os.path.getsize(blocker) == 0
