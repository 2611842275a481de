"""Holding a leased package's files so that nobody can swap them while a command runs (Windows).

The check before a run proves the files at their paths. On Windows the agent then opens every
file of the package with CreateFileW and a share mode of read only (no FILE_SHARE_WRITE, no
FILE_SHARE_DELETE) and keeps the handles for as long as the lease lasts: until it is released,
Windows refuses to anyone, Administrators included, to open a file for writing, to delete it,
rename it or replace it, so what runs is what was checked. Readers (the installer, other
wrappers, the agent seeding it) are not hindered.

On POSIX there is no such lock; there the cache folders are writable by the agent's account
alone (state.secure_folder), so only that account or root could swap a file, and the pre-run
check compares file identity (inode, size, times) by path. ``hold`` returns an empty pin there.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

GENERIC_READ = 0x80000000
FILE_SHARE_READ = 0x1
OPEN_EXISTING = 3
FILE_ATTRIBUTE_NORMAL = 0x80
INVALID_HANDLE_VALUE = 2**64 - 1 if sys.maxsize > 2**32 else 2**32 - 1


class Pin:
    """Open handles on a package's files; ``close()`` lets them be changed again (idempotent)."""

    def __init__(self, handles: list[int] | None = None) -> None:
        self._handles = handles or []

    def __len__(self) -> int:
        return len(self._handles)

    def close(self) -> None:
        handles, self._handles = self._handles, []
        if handles:
            kernel32 = _kernel32()
            for handle in handles:
                kernel32.CloseHandle(handle)


def _kernel32():  # type: ignore[no-untyped-def]  # a ctypes.WinDLL, which exists only on Windows
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.CreateFileW.restype = wintypes.HANDLE
    kernel32.CreateFileW.argtypes = [
        wintypes.LPCWSTR, wintypes.DWORD, wintypes.DWORD, ctypes.c_void_p, wintypes.DWORD, wintypes.DWORD, wintypes.HANDLE
    ]
    kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    return kernel32


def hold(paths: Iterable[Path], *, windows: bool | None = None) -> Pin:
    """Open every file read-only, denying write and delete to everyone; OSError if one cannot be
    held (missing, or open elsewhere for writing), with nothing left open."""
    if windows is None:
        windows = sys.platform == "win32"
    if not windows:
        return Pin()
    import ctypes

    kernel32 = _kernel32()
    pin = Pin()
    try:
        for path in paths:
            handle = kernel32.CreateFileW(str(path), GENERIC_READ, FILE_SHARE_READ, None, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, None)
            if handle is None or handle == INVALID_HANDLE_VALUE:
                error = ctypes.get_last_error()
                raise OSError(None, f"cannot hold {path} open: {ctypes.FormatError(error).strip()}", str(path), error)
            pin._handles.append(handle)
    except BaseException:
        pin.close()
        raise
    return pin
