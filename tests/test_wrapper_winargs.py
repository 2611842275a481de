"""Windows command-line splitting (CommandLineToArgvW rules) and the verbatim tail, tested on any OS."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pdist.wrapper.resolve import windows_command_line
from p2pdist.wrapper.winargs import (
    command_tail,
    leading_words,
    program_name,
    split_words,
    tail_after_options,
)


def args_of(line: str) -> list[str]:
    return [word.text for word in split_words(line)[1:]]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('msiexec /i "Office 2016.msi" /qn', ["/i", "Office 2016.msi", "/qn"]),
        ('msiexec /i office.msi TRANSFORMS="a b.mst" /qn', ["/i", "office.msi", "TRANSFORMS=a b.mst", "/qn"]),
        ('setup.exe "C:\\Program Files\\App\\\\"', ["C:\\Program Files\\App\\"]),
        # The classic trap: one backslash before the closing quote escapes it.
        ('setup.exe "C:\\Program Files\\App\\" /s', ['C:\\Program Files\\App" /s']),
        ("p a\\\\b", ["a\\\\b"]),
        ('p a\\\\\\"b', ['a\\"b']),
        ('p a\\\\\\\\"b c" d', ["a\\\\b c", "d"]),
        ('p "abc" d e', ["abc", "d", "e"]),
        ('p a\\\\b d"e f"g h', ["a\\\\b", "de fg", "h"]),
        ('p "" x', ["", "x"]),
        ('p "a b"c', ["a bc"]),
        ("p \ta\t\t b  ", ["a", "b"]),
        ('p "unterminated quote', ["unterminated quote"]),
        # Runs of quotes inside quotes count in threes (the opening one included).
        ('p "a"""b" c', ['a"b', "c"]),
        ('p """"', ['"']),
        ('p "a""b" c', ['a"b c']),
        ("p /qn REBOOT=ReallySuppress", ["/qn", "REBOOT=ReallySuppress"]),
        ("p", []),
    ],
)
def test_argument_words(line: str, expected: list[str]) -> None:
    assert args_of(line) == expected


@pytest.mark.parametrize(
    ("line", "program", "rest"),
    [
        ('"C:\\Program Files\\Python\\python.exe" -m x', "C:\\Program Files\\Python\\python.exe", ["-m", "x"]),
        ('C:\\a"b c', 'C:\\a"b', ["c"]),  # an unquoted program name keeps its quotes
        ('"C:\\x\\"y z', "C:\\x\\", ["y", "z"]),  # backslashes mean nothing in the program name
        ('"C:\\no end', "C:\\no end", []),
        ("setup.exe\t/s", "setup.exe", ["/s"]),
    ],
)
def test_program_word(line: str, program: str, rest: list[str]) -> None:
    assert program_name(line) == program
    assert args_of(line) == rest


def test_word_spans_point_into_the_line() -> None:
    line = 'msiexec  /i "a b.msi"\tTRANSFORMS="x y.mst"'
    words = split_words(line)
    assert [line[w.start : w.end] for w in words] == ["msiexec", "/i", '"a b.msi"', 'TRANSFORMS="x y.mst"']
    assert command_tail(line, 1) == '/i "a b.msi"\tTRANSFORMS="x y.mst"'
    assert command_tail(line, 4) == ""
    assert split_words("") == []


def test_tail_after_module_invocation_is_verbatim() -> None:
    raw = (
        '"C:\\Python311\\python.exe" -m p2pdist.wrapper --pkg PS100012 --retry-code 1619  '
        'msiexec /i "a b.msi"  TRANSFORMS="a b.mst" /qn '
    )
    orig_argv = ["C:\\Python311\\python.exe", "-m", "p2pdist.wrapper", "--pkg", "PS100012", "--retry-code", "1619",
                 "msiexec", "/i", "a b.msi", "TRANSFORMS=a b.mst", "/qn"]  # fmt: skip
    argv = ["C:\\Python311\\Lib\\site-packages\\p2pdist\\wrapper\\__main__.py", *orig_argv[3:]]
    invocation, command = windows_command_line(raw, orig_argv, argv)
    assert invocation.package_id == "PS100012" and invocation.retry_code == 1619
    assert command.raw == 'msiexec /i "a b.msi"  TRANSFORMS="a b.mst" /qn '
    assert command.argv == ("msiexec", "/i", "a b.msi", "TRANSFORMS=a b.mst", "/qn")


def test_tail_after_console_script_launcher() -> None:
    raw = '"C:\\Python311\\python.exe" "C:\\Python311\\Scripts\\p2pdist-wrapper.exe" --pkg PS100012 -- "my setup.exe" /s'
    orig_argv = ["C:\\Python311\\python.exe", "C:\\Python311\\Scripts\\p2pdist-wrapper.exe", "--pkg", "PS100012", "--",
                 "my setup.exe", "/s"]  # fmt: skip
    assert leading_words(orig_argv, orig_argv[1:]) == 2
    _, command = windows_command_line(raw, orig_argv, orig_argv[1:])
    assert command.raw == '"my setup.exe" /s'
    assert command.program == "my setup.exe"


def test_frozen_executable_skips_only_its_name() -> None:
    raw = "p2pdist-wrapper.exe setup.exe /S /D=C:\\Program Files\\X"
    argv = ["p2pdist-wrapper.exe", "setup.exe", "/S", "/D=C:\\Program", "Files\\X"]
    assert leading_words(argv, argv) == 1
    _, command = windows_command_line(raw, argv, argv)
    assert command.raw == "setup.exe /S /D=C:\\Program Files\\X"


def test_disagreement_with_the_runtime_falls_back_to_its_argv() -> None:
    raw = "python.exe w.py --log a x /y"
    assert tail_after_options(raw, 2, 2, ["--log", "a", "x", "/y"]) == "x /y"
    # The runtime read the option words differently: the boundary is unsure, rebuild from its argv.
    assert tail_after_options(raw, 2, 2, ["--log", "other", "x y", "/y"]) == '"x y" /y'


TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=10)


@settings(max_examples=200, deadline=None)
@given(st.lists(TEXT, max_size=8))
def test_split_inverts_list2cmdline(args: list[str]) -> None:
    assert args_of("prog.exe " + subprocess.list2cmdline(args)) == args


OPTIONS = st.sampled_from([["--pkg", "PS100012"], ["--retry-code", "1619"], ["--log", "C:\\logs\\w.log"], ["--wait=5"]])


@settings(max_examples=150, deadline=None)
@given(
    options=st.lists(OPTIONS, max_size=3, unique_by=lambda p: p[0].split("=")[0]),
    program=TEXT.filter(lambda t: t and not t.startswith("--") and '"' not in t and "\t" not in t and " " not in t),
    args=st.lists(TEXT, max_size=6),
)
def test_command_tail_is_exactly_what_followed_the_options(
    options: list[list[str]], program: str, args: list[str]
) -> None:
    own = [word for pair in options for word in pair]
    tail = subprocess.list2cmdline([program, *args])
    raw = "C:\\py\\python.exe C:\\py\\w.py " + (subprocess.list2cmdline(own) + " " if own else "") + tail
    orig_argv = ["C:\\py\\python.exe", "C:\\py\\w.py", *own, program, *args]
    invocation, command = windows_command_line(raw, orig_argv, orig_argv[1:])
    assert command.raw == tail
    assert command.argv == (program, *args)
    assert invocation.consumed == len(own)
