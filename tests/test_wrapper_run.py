"""Finding and running the command: real child processes, exit codes passed through exactly."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from p2pdist.wrapper.resolve import Command
from p2pdist.wrapper.run import CannotStart, batch_command_line, find_program, run, search_dirs
from tests.support.wrapper import INSTALLER, make_executable

@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache" / "0123abcd" / "PS100012"
    make_executable(folder / "installer.py", INSTALLER)
    monkeypatch.setenv("INSTALLER_RECORD", str(tmp_path / "record.jsonl"))
    return folder


def records(tmp_path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (tmp_path / "record.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- finding the program


def test_package_folder_comes_before_path(tmp_path: Path, package: Path) -> None:
    elsewhere = make_executable(tmp_path / "bin" / "installer.py", "#!/bin/sh\n")
    env = {"PATH": str(elsewhere.parent)}
    assert find_program("installer.py", str(package), env, windows=False) == str(package / "installer.py")
    assert find_program("installer.py", str(tmp_path / "empty"), env, windows=False) == str(elsewhere)
    assert find_program("missing", str(package), env, windows=False) is None


def test_relative_path_is_taken_from_the_package_folder(tmp_path: Path, package: Path) -> None:
    make_executable(package / "sub" / "setup.sh", "#!/bin/sh\n")
    assert find_program("sub/setup.sh", str(package), {"PATH": ""}, windows=False) == str(package / "sub" / "setup.sh")
    assert find_program("./installer.py", str(package), {"PATH": ""}, windows=False) == str(package / "installer.py")
    assert find_program(str(package / "installer.py"), "/nonexistent", {}, windows=False) == str(package / "installer.py")


def test_not_executable_is_not_found_on_posix(package: Path) -> None:
    (package / "readme.txt").write_text("x")
    assert find_program("readme.txt", str(package), {"PATH": ""}, windows=False) is None


def test_windows_search_uses_pathext_and_windir(tmp_path: Path, package: Path) -> None:
    windir = tmp_path / "Windows"
    (windir).mkdir()
    (windir / "regedit.exe").write_text("")
    (package / "setup.cmd").write_text("")
    # Lower-case extensions: this file system, unlike Windows', tells case apart.
    env = {"PATH": "", "windir": str(windir), "PATHEXT": ".com;.exe;.bat;.cmd"}
    assert search_dirs(str(package), env, windows=True)[:2] == [str(package), str(windir)]
    assert find_program("regedit", str(package), env, windows=True) == str(windir / "regedit.exe")
    assert find_program("setup.cmd", str(package), env, windows=True) == str(package / "setup.cmd")
    assert find_program("setup", str(package), env, windows=True) == str(package / "setup.cmd")
    assert find_program("SETUP.CMD", str(package), env, windows=True) is None  # has an extension: taken as is
    assert find_program("sub\\none", str(package), env, windows=True) is None


# ---------------------------------------------------------------- running it


@pytest.mark.parametrize("code", [0, 3010, 1603, 1641])
def test_exit_code_passes_through(tmp_path: Path, package: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    monkeypatch.setenv("INSTALLER_EXIT", str(code))
    executable = find_program("installer.py", str(package), {"PATH": ""}, windows=False)
    assert executable is not None
    result = run(Command(("installer.py", "/i", "office.msi")), executable, str(package))
    assert result == code & 0xFF  # what a POSIX child can return at all
    [seen] = records(tmp_path)
    assert seen == {"argv": ["/i", "office.msi"], "cwd": str(package)}


def test_quoting_sensitive_arguments_arrive_exactly(tmp_path: Path, package: Path) -> None:
    tricky = ["/i", "a b.msi", 'TRANSFORMS="a b.mst"', "", "x\\\"y", "$HOME", "*", "; rm -rf /", "-x", "--pkg", "é ü", "\\\\"]
    run(Command(("installer.py", *tricky)), str(package / "installer.py"), str(package))
    assert records(tmp_path)[0]["argv"] == tricky


def test_signal_death_maps_to_128_plus_signal(tmp_path: Path) -> None:
    script = make_executable(tmp_path / "die.py", f"#!{sys.executable}\nimport os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n")
    assert run(Command(("die.py",)), str(script), str(tmp_path)) == 128 + signal.SIGTERM


def test_unstartable_command_is_cannot_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\x00\x01not an executable")
    bad.chmod(0o755)
    with pytest.raises(CannotStart, match="cannot start 'bad.bin'"):
        run(Command(("bad.bin",)), str(bad), str(tmp_path))


def test_signal_handlers_are_restored(package: Path) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    run(Command(("installer.py",)), str(package / "installer.py"), str(package))
    assert {s: signal.getsignal(s) for s in before} == before
    assert os.getcwd() != str(package)  # the wrapper itself never changes directory


def test_a_batch_file_is_started_by_its_full_path_with_the_rest_verbatim() -> None:
    raw = 'setup.cmd /i "a b.msi"  PROP="x y" /qn'
    script = "C:\\p2pdist\\cache\\ab\\PS100012\\setup.cmd"
    assert batch_command_line(raw, script) == f'"{script}" /i "a b.msi"  PROP="x y" /qn'
    assert batch_command_line('"x86\\in stall.bat"', script) == f'"{script}"'


def test_a_start_folder_comes_before_the_package_folder(tmp_path: Path, package: Path) -> None:
    sub = package / "x86"
    make_executable(sub / "installer.py", "#!/bin/sh\n")
    make_executable(package / "only-top.py", "#!/bin/sh\n")
    assert find_program("installer.py", str(package), {"PATH": ""}, windows=False, start_dir=str(sub)) == str(sub / "installer.py")
    assert find_program("only-top.py", str(package), {"PATH": ""}, windows=False, start_dir=str(sub)) == str(package / "only-top.py")
    assert find_program("./installer.py", str(package), {}, windows=False, start_dir=str(sub)) == str(sub / "installer.py")
    assert search_dirs(str(package), {"PATH": "/bin"}, windows=False, start_dir=str(sub)) == [str(sub), str(package), "/bin"]
