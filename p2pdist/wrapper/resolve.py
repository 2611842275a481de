"""From the wrapper's command line to what to do: options, the command, and which package.

SMS allows 255 bytes per program line, so the options are short and few. The package comes from
``--pkg``; without it, from the current directory, because "run from distribution point" starts
the program in ``\\\\DP\\SMSPKG<drive>$\\<PackageID>``. Older clients name their cache folders
``<PackageID>.<SourceVersion>.<account>``, which is read the same way. A program whose "Start in"
is a subfolder of the package (``x86``) starts in ``...\\<PackageID>\\x86``: the nearest folder
that names the package is the package, and what lies below it is where the command runs in the
cached copy too (``start_in``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from p2pdist.errors import UsageError
from p2pdist.metainfo.package_id import normalize_package_id
from p2pdist.records import Record
from p2pdist.wrapper.exitcodes import (
    EXIT_NOT_PUBLISHED,
    MAX_CODE,
    RETRY_DEFAULT,
    UNPUBLISHED_GRACE,
    check_retry_code,
    check_unpublished_code,
)
from p2pdist.wrapper.options import parse_int, parse_seconds, scan_options
from p2pdist.wrapper.winargs import leading_words, split_words, tail_after_options

USAGE = (
    "usage: p2pdist-wrapper [--pkg ID] [--version N] [--retry-code 1618] [--wait SECONDS] "
    "[--unpublished-code 7705] [--unpublished-grace SECONDS] "
    "[--agent ADDR] [--token-file FILE] [--log FILE] [--] <command> [args...]"
)
WITH_VALUE = frozenset({
    "--pkg", "--version", "--retry-code", "--wait", "--unpublished-code", "--unpublished-grace", "--agent",
    "--token-file", "--log",
})  # fmt: skip
FLAGS = frozenset({"--help"})
MAX_WAIT = 86400.0
MAX_GRACE = 90 * 86400.0

# A DP package folder ("PS100012") or an old client cache folder ("PS100012.3.System").
_FOLDER_RE = re.compile(r"\A([A-Z0-9]{3}[0-9A-F]{5})(?:\.[0-9]+\..+)?\Z", re.IGNORECASE)


class Command(Record):
    """What to run: the argv as the wrapper read it, and on Windows the raw command-line tail."""

    argv: tuple[str, ...]
    raw: str | None = None

    @property
    def program(self) -> str:
        return self.argv[0]


class NoPackageId(UsageError):
    """Neither ``--pkg`` nor the current directory names a package."""


class Invocation(Record):
    """The wrapper's options and the command after them, as typed."""

    command: tuple[str, ...]
    consumed: int
    package_id: str | None = None
    version: int | None = None
    retry_code: int = RETRY_DEFAULT
    wait: float = 0.0
    unpublished_code: int = EXIT_NOT_PUBLISHED
    unpublished_grace: float = UNPUBLISHED_GRACE
    agent: str | None = None
    token_file: str | None = None
    log: str | None = None
    help: bool = False


def parse_command_line(argv: Sequence[str]) -> Invocation:
    """Parse the words after the wrapper's own name; UsageError explains what is wrong."""
    scanned = scan_options(argv, with_value=WITH_VALUE, flags=FLAGS)
    command = tuple(argv[scanned.consumed :])
    if scanned.has("--help"):
        return Invocation(command=command, consumed=scanned.consumed, help=True)
    if not command:
        raise UsageError("no command to run after the options")
    package_id = None
    if (text := scanned.value("--pkg")) is not None:
        try:
            package_id = normalize_package_id(text)
        except ValueError as exc:
            raise UsageError(f"--pkg: {exc}") from None
    version = None
    if (text := scanned.value("--version")) is not None:
        version = parse_int("--version", text, low=0, high=MAX_CODE)
    retry_code = RETRY_DEFAULT
    if (text := scanned.value("--retry-code")) is not None:
        try:
            retry_code = check_retry_code(parse_int("--retry-code", text, low=1, high=MAX_CODE))
        except ValueError as exc:
            raise UsageError(f"--retry-code: {exc}") from None
    wait = 0.0
    if (text := scanned.value("--wait")) is not None:
        wait = parse_seconds("--wait", text, high=MAX_WAIT)
    unpublished_code = EXIT_NOT_PUBLISHED
    if (text := scanned.value("--unpublished-code")) is not None:
        unpublished_code = parse_int("--unpublished-code", text, low=1, high=MAX_CODE)
    try:
        unpublished_code = check_unpublished_code(unpublished_code, retry_code)
    except ValueError as exc:
        raise UsageError(f"--unpublished-code: {exc}") from None
    grace = UNPUBLISHED_GRACE
    if (text := scanned.value("--unpublished-grace")) is not None:
        grace = parse_seconds("--unpublished-grace", text, high=MAX_GRACE)
    agent = scanned.value("--agent")
    if agent is not None and not (agent.startswith("unix:/") or agent.startswith("http://")):
        raise UsageError(f"--agent wants unix:/path/to/socket or http://127.0.0.1:PORT, not {agent!r}")
    for name in ("--token-file", "--log"):
        if scanned.value(name) == "":
            raise UsageError(f"{name} wants a file name")
    return Invocation(
        command=command,
        consumed=scanned.consumed,
        package_id=package_id,
        version=version,
        retry_code=retry_code,
        wait=wait,
        unpublished_code=unpublished_code,
        unpublished_grace=grace,
        agent=agent,
        token_file=scanned.value("--token-file"),
        log=scanned.value("--log"),
    )


def posix_command_line(argv: Sequence[str]) -> tuple[Invocation, Command]:
    """The wrapper's options and the command's argv from ``sys.argv[1:]``."""
    invocation = parse_command_line(argv)
    return invocation, Command(invocation.command)


def windows_command_line(raw: str, orig_argv: Sequence[str], argv: Sequence[str]) -> tuple[Invocation, Command]:
    """The options from the C runtime's argv, the command as the verbatim tail of the raw line.

    ``raw`` is GetCommandLineW(), ``orig_argv``/``argv`` are ``sys.orig_argv``/``sys.argv``.
    """
    invocation = parse_command_line(argv[1:])
    if invocation.help:
        return invocation, Command(invocation.command)
    skip = leading_words(orig_argv, argv)
    tail = tail_after_options(raw, skip, invocation.consumed, argv[1:])
    words = tuple(word.text for word in split_words(tail))
    return invocation, Command(words or invocation.command, raw=tail)


def _parts(path: str) -> list[str]:
    return [part for part in re.split(r"[\\/]", path) if part]


def _named_package(part: str) -> str | None:
    match = _FOLDER_RE.match(part)
    return match.group(1).upper() if match else None


def package_from_directory(path: str) -> str | None:
    """The PackageID that the directory or its nearest ancestor names, or None.

    Both ``/`` and ``\\`` separate parts; the nearest one wins, so a package nested in a folder
    that happens to look like an ID is still found by its own folder.
    """
    for part in reversed(_parts(path)):
        if (package_id := _named_package(part)) is not None:
            return package_id
    return None


def start_in(cwd: str, package_id: str) -> tuple[str, ...]:
    """The subfolder of the package that ``cwd`` is in: ``("x86",)`` for ``\\\\DP\\...\\PS100012\\x86``.

    Empty when ``cwd`` is the package folder itself or names no folder of ``package_id`` (the
    wrapper started elsewhere with ``--pkg``), or when a part would climb out (``..``).
    """
    parts = _parts(cwd)
    for index in range(len(parts) - 1, -1, -1):
        if _named_package(parts[index]) == package_id:
            below = tuple(part for part in parts[index + 1 :] if part != ".")
            return () if ".." in below else below
    return ()


def resolve_package(invocation: Invocation, cwd: str) -> str:
    """``--pkg`` if given, else the PackageID the working directory names; NoPackageId otherwise."""
    if invocation.package_id is not None:
        return invocation.package_id
    package_id = package_from_directory(cwd)
    if package_id is None:
        raise NoPackageId(f"no --pkg given and the current directory {cwd!r} does not name a PackageID (e.g. PS100012)")
    return package_id
