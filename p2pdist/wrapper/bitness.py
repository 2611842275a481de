"""Starting the command with the view of Windows its caller had (32-bit under WOW64, or native).

The SMS 2003 / SCCM 2007 client is a 32-bit process. A program line it starts without p2pdist
runs under WOW64: ``msiexec`` is ``SysWOW64\\msiexec.exe``, a ``.cmd`` runs in the 32-bit
``cmd.exe``, and so their writes to ``HKLM\\SOFTWARE`` land in ``Wow6432Node`` and
``%ProgramFiles%`` is ``Program Files (x86)``. p2pdist's wrapper is 64-bit (one bundled 64-bit
python serves the agent and the wrapper), so looked up naively the same line would get the
64-bit tools and silently install elsewhere.

The choice: keep one 64-bit wrapper and start the command as its caller would have. The
launcher (windows/launcher.c) sees whether the process that started it is 32-bit and then
passes ``-X p2pdist-view=32``; a 64-bit caller (the ConfigMgr 2012+ client, an administrator's
console) gets the native view as before. With the 32-bit view the command is looked up as a
32-bit process looks it up, where file system redirection applies: ``System32`` means
``SysWOW64`` and ``Sysnative`` means ``System32``, and a batch file runs in the 32-bit
``cmd.exe``. Nothing else needs doing: a 32-bit program started from a 64-bit one gets the
32-bit environment (``ProgramFiles``, ``PROCESSOR_ARCHITECTURE``) and registry view from WOW64
itself, and a program in the package runs with its own bitness either way. The alternative, a
32-bit launcher with a 32-bit python, would double the bundled interpreter and still need the
reverse mapping for 64-bit callers.

Pure except ``caller_view``: the rules are tested on any system.
"""

from __future__ import annotations

import ntpath
import sys
from collections.abc import Mapping

from p2pdist.wrapper.resolve import Command

NATIVE = "native"
WOW64 = "32"
XOPTION = "p2pdist-view"
BATCH_SUFFIXES = (".cmd", ".bat")


def caller_view(xoptions: Mapping[str, object] | None = None) -> str:
    """The view the launcher found its caller in: ``WOW64`` or ``NATIVE`` (also off Windows)."""
    options = getattr(sys, "_xoptions", {}) if xoptions is None else xoptions
    return WOW64 if options.get(XOPTION) == WOW64 else NATIVE


def _windir(env: Mapping[str, str]) -> str | None:
    return env.get("SystemRoot") or env.get("windir") or env.get("WINDIR") or env.get("SYSTEMROOT")


def redirect(path: str, windir: str | None, view: str) -> str:
    """``path`` as a 32-bit process's file system redirection reads it; unchanged in the native view.

    ``<windir>\\System32[\\...]`` becomes ``<windir>\\SysWOW64[\\...]`` and ``<windir>\\Sysnative``
    becomes ``<windir>\\System32``, compared without regard to case or a trailing backslash.
    """
    if view != WOW64 or not windir or not path:
        return path
    root = ntpath.normpath(windir).rstrip("\\")
    normal = ntpath.normpath(path)
    for alias, real in (("System32", "SysWOW64"), ("Sysnative", "System32")):
        prefix = f"{root}\\{alias}"
        lower, wanted = normal.lower(), prefix.lower()
        if lower == wanted or lower.startswith(wanted + "\\"):
            return f"{root}\\{real}{normal[len(prefix):]}"
    return path


def search_env(env: Mapping[str, str], view: str) -> Mapping[str, str]:
    """``env`` with PATH read through ``redirect``: where a 32-bit caller's search would look."""
    if view != WOW64:
        return env
    windir = _windir(env)
    key = next((name for name in ("PATH", "Path") if name in env), None)
    if key is None:
        return env
    changed = dict(env)
    changed[key] = ";".join(redirect(part, windir, view) for part in env[key].split(";"))
    return changed


def program_name(program: str, env: Mapping[str, str], view: str) -> str:
    """A program given with its path (``C:\\Windows\\System32\\msiexec.exe``), redirected likewise."""
    return redirect(program, _windir(env), view) if ("\\" in program or "/" in program) else program


def for_view(command: Command, executable: str, env: Mapping[str, str], view: str) -> tuple[Command, str]:
    """What to hand CreateProcess so the command runs in ``view``.

    In the 32-bit view a batch file gets the 32-bit ``cmd.exe`` explicitly (CreateProcess would
    pick the caller's, the 64-bit one), with the line CreateProcess itself would build for it:
    ``cmd.exe /c "<script's full path> <the rest verbatim>"``.
    """
    windir = _windir(env)
    if view != WOW64 or command.raw is None or not windir or not executable.lower().endswith(BATCH_SUFFIXES):
        return command, executable
    from p2pdist.wrapper.run import batch_command_line

    cmd = ntpath.join(ntpath.normpath(windir), "SysWOW64", "cmd.exe")
    line = f'"{cmd}" /c "{batch_command_line(command.raw, executable)}"'
    return Command(command.argv, raw=line), cmd
