"""Windows command lines: where each word starts, so the installer's part passes through verbatim.

Windows hands a process one string, and each program splits it its own way (msiexec does not
use the C runtime's rules: ``TRANSFORMS="a b.mst"`` keeps its quotes for msiexec). Splitting the
wrapper's part into an argv and joining the rest again would re-quote what the administrator
wrote, so the wrapper finds where its own words end and hands the remaining text, byte for byte,
to CreateProcess.

Words are found with CommandLineToArgvW's rules, which the C runtime shares for every case an
administrator writes:

- the program name (word 0) ends at the next quote when it starts with one, else at the first
  space or tab; backslashes and quotes inside it mean nothing;
- later words end at a space or tab outside quotes; ``2n`` backslashes before a quote become
  ``n`` and the quote toggles quoting, ``2n+1`` become ``n`` and a literal quote; other
  backslashes are literal; inside quotes, runs of quotes count in threes (the opening one
  included): ``3n`` give ``n`` quotes, ``3n+1`` give ``n`` and close, ``3n+2`` give ``n+1`` and close.

Everything here is pure except ``current_command_line``, so the rules are tested on any system.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from p2pdist.records import Record

_BLANK = " \t"


class Word(Record):
    """One argument as the program sees it, and the span ``[start, end)`` it came from."""

    text: str
    start: int
    end: int


def _program_word(line: str) -> Word:
    if line.startswith('"'):
        close = line.find('"', 1)
        if close < 0:
            return Word(line[1:], 0, len(line))
        return Word(line[1:close], 0, close + 1)
    end = 0
    while end < len(line) and line[end] not in _BLANK:
        end += 1
    return Word(line[:end], 0, end)


def _argument_word(line: str, start: int) -> Word:
    out: list[str] = []
    backslashes = 0
    quotes = 0  # 0 outside quotes; 1 inside; counts a run of quotes modulo 3
    index = start
    while index < len(line):
        char = line[index]
        if char in _BLANK and quotes == 0:
            break
        if char == "\\":
            out.append(char)
            backslashes += 1
            index += 1
            continue
        if char == '"':
            if backslashes % 2 == 0:
                del out[len(out) - backslashes // 2 :]
                quotes += 1
            else:
                del out[len(out) - backslashes // 2 - 1 :]
                out.append('"')
            backslashes = 0
            index += 1
            while index < len(line) and line[index] == '"':
                quotes += 1
                if quotes == 3:
                    out.append('"')
                    quotes = 0
                index += 1
            if quotes == 2:
                quotes = 0
            continue
        out.append(char)
        backslashes = 0
        index += 1
    return Word("".join(out), start, index)


def split_words(line: str) -> list[Word]:
    """Every word of a full command line (program name first), with where it stands in ``line``."""
    if not line:
        return []
    words = [_program_word(line)]
    index = words[0].end
    while True:
        while index < len(line) and line[index] in _BLANK:
            index += 1
        if index >= len(line):
            return words
        word = _argument_word(line, index)
        words.append(word)
        index = word.end


def command_tail(line: str, skip: int) -> str:
    """``line`` from the start of word number ``skip`` on, verbatim; empty when there is no such word."""
    words = split_words(line)
    if skip >= len(words):
        return ""
    return line[words[skip].start :]


def program_name(tail: str) -> str:
    """The program a command line starts, read as the started program will read its own argv[0]."""
    words = split_words(tail)
    return words[0].text if words else ""


def leading_words(orig_argv: Sequence[str], argv: Sequence[str]) -> int:
    """How many words of the raw command line come before the wrapper's first own argument.

    ``python.exe -m p2pdist.wrapper --pkg ...`` has three, a console-script launcher
    (``python.exe wrapper.exe --pkg ...``) two, a frozen executable one: the interpreter's
    original argv is longer than the script's argv by the words before the script name.
    """
    return max(1, len(orig_argv) - len(argv) + 1)


def own_words(line: str, skip: int) -> tuple[str, ...]:
    """The words after the interpreter's (the wrapper's options and the command), as texts."""
    return tuple(word.text for word in split_words(line)[skip:])


def tail_after_options(line: str, skip: int, consumed: int, argv_rest: Sequence[str]) -> str:
    """The command's part of ``line`` after ``skip`` interpreter words and ``consumed`` option words.

    ``argv_rest`` is what the C runtime made of the same words (``sys.argv[1:]``). If our split
    of the option words disagrees with it (only possible with quoting no program line uses), the
    boundary is unsure, so the command is rebuilt from the runtime's argv with list2cmdline
    instead of guessing.
    """
    mine = own_words(line, skip)
    if mine[:consumed] == tuple(argv_rest[:consumed]) and len(mine) > consumed:
        return command_tail(line, skip + consumed)
    import subprocess  # Windows only: not on the path of every start

    return subprocess.list2cmdline(list(argv_rest[consumed:]))


def current_command_line() -> str:  # pragma: no cover - Windows only
    """This process's command line exactly as its parent passed it (GetCommandLineW)."""
    if sys.platform != "win32":
        raise OSError("the raw command line exists only on Windows")
    import ctypes

    get_command_line = ctypes.windll.kernel32.GetCommandLineW
    get_command_line.argtypes = []
    get_command_line.restype = ctypes.c_wchar_p
    return str(get_command_line())
