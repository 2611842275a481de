"""Running the command from the cached package folder and returning its exit code exactly.

The command is found as SMS finds it: in the folder it starts in (the package folder, or the
subfolder a relative "Start in" names), then the package folder, then ``%windir%`` (Windows),
then PATH. The search is done here rather than by the system, because CreateProcess and
``shutil.which`` on Windows look in the *wrapper's* current directory first, which may be the
distribution point's share: the point is to run the local copy.

It runs as an argument vector on POSIX and, on Windows, as the verbatim command-line tail (see
winargs), never through a shell. A ``.cmd`` or ``.bat`` file is started as Windows starts one
itself, through CreateProcess with the file's full path as the first word of the command line
(CreateProcess then runs it with cmd.exe): given as the application name instead, cmd.exe would
look the bare name up again in the current directory and PATH. Its standard streams are the wrapper's. The wrapper stays until
the command ends, whatever signals arrive: Ctrl-C reaches the command from the console directly,
SIGTERM and SIGHUP are passed on, and only the command's exit code decides the result.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from types import FrameType

from p2pdist.errors import LocalError
from p2pdist.wrapper.exitcodes import from_returncode
from p2pdist.wrapper.resolve import Command
from p2pdist.wrapper.winargs import split_words


class CannotStart(LocalError):
    """The command is not in the package folder or on the search path, or the system refused to start it."""


BATCH_SUFFIXES = (".cmd", ".bat")


def search_dirs(package_dir: str, env: Mapping[str, str], *, windows: bool, start_dir: str | None = None) -> list[str]:
    """Where SMS looks for a program: the start folder, the package folder, ``%windir%`` on
    Windows, then PATH."""
    dirs = [start_dir] if start_dir and start_dir != package_dir else []
    dirs.append(package_dir)
    if windows:
        windir = env.get("windir") or env.get("WINDIR") or env.get("SystemRoot")
        if windir:
            dirs.append(windir)
    dirs.extend(part for part in env.get("PATH", env.get("Path", "")).split(os.pathsep) if part)
    return dirs


def _candidates(name: str, pathext: Sequence[str]) -> list[str]:
    """``name`` itself when it already has a listed extension, else ``name`` plus each extension
    (after ``name`` itself when it has another extension, as cmd.exe tries ``setup.py``)."""
    if not pathext:
        return [name]
    lower = name.lower()
    if any(lower.endswith(ext.lower()) for ext in pathext):
        return [name]
    extended = [name + ext for ext in pathext]
    return [name, *extended] if os.path.splitext(name)[1] else extended


def _runnable(path: str, *, windows: bool) -> bool:
    return os.path.isfile(path) and (windows or os.access(path, os.X_OK))


def find_program(
    program: str,
    package_dir: str,
    env: Mapping[str, str] | None = None,
    *,
    windows: bool | None = None,
    start_dir: str | None = None,
) -> str | None:
    """The full path of ``program`` as SMS would find it, or None.

    ``start_dir`` is the folder the command runs in (default: the package folder). A name with
    a directory part is taken relative to it (or as is, when absolute); a bare name is searched
    in ``search_dirs``, trying PATHEXT on Windows.
    """
    env = os.environ if env is None else env
    if windows is None:
        windows = sys.platform == "win32"
    pathext: list[str] = []
    if windows:
        pathext = [ext for ext in env.get("PATHEXT", ".COM;.EXE;.BAT;.CMD").split(";") if ext]
    separators = ("/", "\\") if windows else ("/",)
    if any(sep in program for sep in separators) or (windows and program[1:2] == ":"):
        base = os.path.normpath(program if os.path.isabs(program) else os.path.join(start_dir or package_dir, program))
        dirs, name = [os.path.dirname(base)], os.path.basename(base)
    else:
        dirs, name = search_dirs(package_dir, env, windows=windows, start_dir=start_dir), program
    if not name:
        return None
    for directory in dirs:
        for candidate in _candidates(name, pathext):
            path = os.path.join(directory, candidate)
            if _runnable(path, windows=windows):
                return path
    return None


def start(command: Command, executable: str, cwd: str) -> subprocess.Popen[bytes]:
    """Start the command in ``cwd`` with inherited standard streams; CannotStart if the system refuses."""
    try:
        if command.raw is not None:
            if executable.lower().endswith(BATCH_SUFFIXES):
                return subprocess.Popen(batch_command_line(command.raw, executable), cwd=cwd)
            return subprocess.Popen(command.raw, executable=executable, cwd=cwd)
        return subprocess.Popen(list(command.argv), executable=executable, cwd=cwd)
    except OSError as exc:
        raise CannotStart(f"cannot start {command.program!r} ({executable}): {exc.strerror or exc}") from None


def batch_command_line(raw: str, script: str) -> str:
    """``raw`` with its program word replaced by the script's quoted full path, the rest verbatim."""
    words = split_words(raw)
    rest = raw[words[0].end :] if words else ""
    return f'"{script}"{rest}'


@contextlib.contextmanager
def _stay_for(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """While the command runs, pass SIGTERM/SIGHUP on and let Ctrl-C go to it alone (POSIX, main thread)."""
    if os.name != "posix" or threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)

    def ignore(signum: int, frame: FrameType | None) -> None:
        return None

    handlers = {signal.SIGTERM: forward, signal.SIGHUP: forward, signal.SIGINT: ignore}
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def wait(process: subprocess.Popen[bytes]) -> int:
    """Wait for the command to end and return its exit code (a POSIX signal death N is 128+N)."""
    with _stay_for(process):
        while True:
            try:
                return from_returncode(process.wait())
            except KeyboardInterrupt:  # Windows console Ctrl-C: the command got it too; its exit code decides
                continue


def run(command: Command, executable: str, cwd: str) -> int:
    """Start the command in ``cwd`` and return its exit code once it has ended."""
    return wait(start(command, executable, cwd))
