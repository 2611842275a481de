"""One log line per wrapper invocation, appended atomically to the machine's wrapper log.

SMS shows an administrator only an exit code; this line says why: the package, what happened,
the exit code, and for a retry the reason and the download's progress. Many wrappers may finish
at the same moment, so each line is one write to a file opened for appending (POSIX O_APPEND; on
Windows a handle with FILE_APPEND_DATA only, where the system appends each write whole). The
format is logfmt (``key=value``, values with blanks or quotes JSON-quoted), easy to grep and to
parse. Only the command's program name is logged, never its arguments, which may hold secrets.
Paths are plain strings and times epoch seconds: pathlib and datetime would cost every start.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

from p2pdist.records import Record

TYPE_CHECKING = False  # typing is not imported at run time (see p2pdist.records)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from os import PathLike

    StrPath = str | PathLike[str]

LOG_ENV = "P2PDIST_WRAPPER_LOG"
LOG_NAME = "wrapper.log"
_PLAIN = re.compile(r"\A[A-Za-z0-9_.:/\\%+@,-]+\Z")


class LogRecord(Record):
    """What one invocation did; ``outcome``: ran, retry, not-published, usage, no-package, not-found,
    interrupted, internal. ``pid`` and ``time`` (epoch seconds) default to this process and now."""

    outcome: str
    exit_code: int
    package: str | None = None
    program: str | None = None
    reason: str | None = None
    progress: float | None = None
    duration: float | None = None
    pid: int | None = None
    time: float | None = None


def _value(value: str) -> str:
    return value if _PLAIN.match(value) else json.dumps(value, ensure_ascii=False)


def format_line(record: LogRecord) -> str:
    """The record as one logfmt line ending in a newline; no value can break the line."""
    millis = round((time.time() if record.time is None else record.time) * 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000)) + f".{millis % 1000:03d}Z"
    pairs: list[tuple[str, str]] = [
        ("time", stamp),
        ("package", record.package or "-"),
        ("outcome", record.outcome),
        ("exit", str(record.exit_code)),
        ("pid", str(os.getpid() if record.pid is None else record.pid)),
    ]
    if record.program is not None:
        pairs.append(("program", record.program))
    if record.progress is not None:
        pairs.append(("progress", f"{record.progress * 100:.1f}%"))
    if record.duration is not None:
        pairs.append(("duration", f"{record.duration:.3f}"))
    if record.reason:
        pairs.append(("reason", record.reason))
    return " ".join(f"{key}={_value(value)}" for key, value in pairs) + "\n"


def default_log_path(env: Mapping[str, str] | None = None, *, windows: bool | None = None) -> str:
    """Where the wrapper logs without ``--log``: the environment, else the machine's log directory.

    The wrapper runs as Local System without a user profile, so the log is machine-wide:
    ``%ProgramData%\\p2pdist\\logs`` on Windows, the platform's site log directory elsewhere.
    """
    env = os.environ if env is None else env
    if env.get(LOG_ENV):
        return env[LOG_ENV]
    if windows is None:
        windows = sys.platform == "win32"
    if windows:
        program_data = env.get("ProgramData") or env.get("PROGRAMDATA") or r"C:\ProgramData"
        return os.path.join(program_data, "p2pdist", "logs", LOG_NAME)
    import platformdirs

    return os.path.join(platformdirs.site_log_dir("p2pdist"), LOG_NAME)


def append_line(path: StrPath, line: str) -> None:
    """Append ``line`` with a single write; OSError if the file cannot be written whole."""
    data = line.encode("utf-8")
    if folder := os.path.dirname(path):
        os.makedirs(folder, exist_ok=True)
    fd = _open_append(path)
    try:
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):
        raise OSError(f"short write to {path}: {written} of {len(data)} bytes")


def _open_append(path: StrPath) -> int:
    if sys.platform == "win32":  # pragma: no cover - Windows only
        return _open_append_windows(path)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)


def _open_append_windows(path: StrPath) -> int:  # pragma: no cover - Windows only
    """A descriptor on a handle opened with FILE_APPEND_DATA alone: every write lands at the end, whole.

    The C runtime's O_APPEND only seeks to the end before writing, which two processes can race.
    """
    if sys.platform != "win32":  # never so (see the caller); tells a type checker the Windows API is absent
        raise OSError("not Windows")
    import ctypes
    import msvcrt
    from ctypes import wintypes

    file_append_data = 0x0004
    share_all = 0x1 | 0x2 | 0x4
    open_always = 4
    normal = 0x80
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    create_file = kernel32.CreateFileW
    create_file.argtypes = [
        wintypes.LPCWSTR,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.LPVOID,
        wintypes.DWORD,
        wintypes.DWORD,
        wintypes.HANDLE,
    ]
    create_file.restype = wintypes.HANDLE
    handle = create_file(str(path), file_append_data, share_all, None, open_always, normal, None)
    if handle is None or handle == wintypes.HANDLE(-1).value:
        raise ctypes.WinError(ctypes.get_last_error())
    return msvcrt.open_osfhandle(handle, os.O_WRONLY)


def write_record(path: StrPath, record: LogRecord) -> str | None:
    """Append the record's line; the error as one line if that failed (logging never changes the exit code)."""
    try:
        append_line(path, format_line(record))
    except OSError as exc:
        return f"cannot write the wrapper log {path}: {exc.strerror or exc}"
    return None
