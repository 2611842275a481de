"""The command started with its caller's view of Windows: the 32-bit lookup rules, on any system."""

from __future__ import annotations

import pytest

from p2pdist.wrapper import bitness
from p2pdist.wrapper.resolve import Command

WINDIR = r"C:\Windows"
ENV = {"SystemRoot": WINDIR, "PATH": r"C:\Windows\system32;C:\Windows;C:\Tools;C:\Windows\System32\Wbem\\"}


@pytest.mark.parametrize(
    ("path", "wow64"),
    [
        (r"C:\Windows\System32\msiexec.exe", r"C:\Windows\SysWOW64\msiexec.exe"),
        (r"c:\windows\system32\MSIEXEC.EXE", r"C:\Windows\SysWOW64\MSIEXEC.EXE"),
        (r"C:\Windows\system32", r"C:\Windows\SysWOW64"),
        (r"C:\Windows\System32\\", r"C:\Windows\SysWOW64"),
        (r"C:\Windows\Sysnative\cmd.exe", r"C:\Windows\System32\cmd.exe"),
        (r"C:\Windows\System32Tools\x.exe", r"C:\Windows\System32Tools\x.exe"),  # a different folder
        (r"C:\Windows\regedit.exe", r"C:\Windows\regedit.exe"),  # %windir% itself is not redirected
        (r"C:\Program Files\App\setup.exe", r"C:\Program Files\App\setup.exe"),
    ],
)
def test_redirect_reads_paths_as_a_32_bit_process(path: str, wow64: str) -> None:
    assert bitness.redirect(path, WINDIR, bitness.WOW64) == wow64
    assert bitness.redirect(path, WINDIR, bitness.NATIVE) == path


def test_the_search_path_is_redirected_only_for_a_32_bit_caller() -> None:
    assert bitness.search_env(ENV, bitness.NATIVE) is ENV
    path = bitness.search_env(ENV, bitness.WOW64)["PATH"].split(";")
    assert path == [r"C:\Windows\SysWOW64", r"C:\Windows", r"C:\Tools", r"C:\Windows\SysWOW64\Wbem"]
    assert ENV["PATH"].startswith(r"C:\Windows\system32")  # the caller's mapping is not changed
    assert bitness.search_env({"SystemRoot": WINDIR}, bitness.WOW64) == {"SystemRoot": WINDIR}


def test_a_program_with_a_path_is_redirected_a_bare_name_is_left_to_the_search() -> None:
    assert bitness.program_name(r"%s\System32\reg.exe" % WINDIR, ENV, bitness.WOW64) == r"C:\Windows\SysWOW64\reg.exe"
    assert bitness.program_name("msiexec", ENV, bitness.WOW64) == "msiexec"


def test_a_batch_file_gets_the_32_bit_cmd_with_the_line_createprocess_would_build() -> None:
    command = Command(("setup.cmd", "/q", "a b"), raw='setup.cmd /q "a b"')
    script = r"C:\ProgramData\p2pdist\Cache\ab\PS100001\setup.cmd"
    started, executable = bitness.for_view(command, script, ENV, bitness.WOW64)
    assert executable == r"C:\Windows\SysWOW64\cmd.exe"
    assert started.raw == rf'"C:\Windows\SysWOW64\cmd.exe" /c ""{script}" /q "a b""'
    assert started.argv == command.argv
    assert bitness.for_view(command, script, ENV, bitness.NATIVE) == (command, script)
    exe = Command(("msiexec", "/i", "x.msi"), raw="msiexec /i x.msi")
    assert bitness.for_view(exe, r"C:\Windows\SysWOW64\msiexec.exe", ENV, bitness.WOW64) == (exe, r"C:\Windows\SysWOW64\msiexec.exe")
    posix = Command(("setup.cmd",))
    assert bitness.for_view(posix, "/x/setup.cmd", ENV, bitness.WOW64) == (posix, "/x/setup.cmd")


def test_the_view_comes_from_the_launcher_option_alone() -> None:
    assert bitness.caller_view({"p2pdist-view": "32"}) == bitness.WOW64
    assert bitness.caller_view({}) == bitness.NATIVE
    assert bitness.caller_view({"p2pdist-view": "64"}) == bitness.NATIVE
    assert bitness.caller_view() == bitness.NATIVE  # this test process was started without it
