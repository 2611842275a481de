"""Windows ACLs by SID through advapi32: Administrators and SYSTEM only.

The control token (and, at install, the cache and state folders) must be readable by nobody
else: a user who can read the token drives the agent, and one who can write into the cache could
plant a DLL beside an installer that runs as SYSTEM. The ACL is written as SDDL with well-known
SIDs (``BA`` Administrators S-1-5-32-544, ``SY`` SYSTEM S-1-5-18), so it means the same on every
language of Windows, and set in-process (no icacls, whose output is localised), protected from
inheriting the parent's entries.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

ADMINS_AND_SYSTEM = "D:P(A;;FA;;;BA)(A;;FA;;;SY)"
"""A file: full access for Administrators and SYSTEM, nothing inherited, nobody else."""
ADMINS_AND_SYSTEM_TREE = "D:P(A;OICI;FA;;;BA)(A;OICI;FA;;;SY)"
"""A folder: the same, inherited by everything created below it."""

SE_FILE_OBJECT = 1
DACL_SECURITY_INFORMATION = 0x4
PROTECTED_DACL_SECURITY_INFORMATION = 0x80000000
SDDL_REVISION_1 = 1


def _advapi32():  # type: ignore[no-untyped-def]  # a ctypes.WinDLL, which exists only on Windows
    from ctypes import wintypes

    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW.argtypes = [
        wintypes.LPCWSTR, wintypes.DWORD, ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p
    ]
    advapi32.GetSecurityDescriptorDacl.argtypes = [
        ctypes.c_void_p, ctypes.POINTER(wintypes.BOOL), ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(wintypes.BOOL)
    ]
    advapi32.SetNamedSecurityInfoW.restype = wintypes.DWORD
    advapi32.SetNamedSecurityInfoW.argtypes = [
        wintypes.LPWSTR, ctypes.c_int, wintypes.DWORD, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p
    ]
    advapi32.GetNamedSecurityInfoW.restype = wintypes.DWORD
    advapi32.GetNamedSecurityInfoW.argtypes = [
        wintypes.LPWSTR, ctypes.c_int, wintypes.DWORD, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
    ]
    advapi32.ConvertSecurityDescriptorToStringSecurityDescriptorW.argtypes = [
        ctypes.c_void_p, wintypes.DWORD, wintypes.DWORD, ctypes.POINTER(wintypes.LPWSTR), ctypes.c_void_p
    ]
    return advapi32


def _local_free(pointer: object) -> None:
    ctypes.WinDLL("kernel32").LocalFree(pointer)


def restrict(path: Path | str, sddl: str = ADMINS_AND_SYSTEM) -> None:
    """Replace the DACL of ``path`` with ``sddl``'s; OSError if Windows refuses."""
    from ctypes import wintypes

    advapi32 = _advapi32()
    descriptor = ctypes.c_void_p()
    if not advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW(sddl, SDDL_REVISION_1, ctypes.byref(descriptor), None):
        raise ctypes.WinError(ctypes.get_last_error())
    try:
        present, defaulted, dacl = wintypes.BOOL(), wintypes.BOOL(), ctypes.c_void_p()
        if not advapi32.GetSecurityDescriptorDacl(descriptor, ctypes.byref(present), ctypes.byref(dacl), ctypes.byref(defaulted)):
            raise ctypes.WinError(ctypes.get_last_error())
        flags = DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION
        error = advapi32.SetNamedSecurityInfoW(str(path), SE_FILE_OBJECT, flags, None, None, dacl, None)
        if error:
            raise ctypes.WinError(error)
    finally:
        _local_free(descriptor)


def dacl_of(path: Path | str) -> str:
    """The DACL of ``path`` as SDDL (``D:P(A;;FA;;;BA)...``)."""
    from ctypes import wintypes

    advapi32 = _advapi32()
    descriptor = ctypes.c_void_p()
    error = advapi32.GetNamedSecurityInfoW(str(path), SE_FILE_OBJECT, DACL_SECURITY_INFORMATION, None, None, None, None, ctypes.byref(descriptor))
    if error:
        raise ctypes.WinError(error)
    try:
        text = wintypes.LPWSTR()
        if not advapi32.ConvertSecurityDescriptorToStringSecurityDescriptorW(
            descriptor, SDDL_REVISION_1, DACL_SECURITY_INFORMATION, ctypes.byref(text), None
        ):
            raise ctypes.WinError(ctypes.get_last_error())
        try:
            return str(text.value)
        finally:
            _local_free(text)
    finally:
        _local_free(descriptor)
