"""The Windows Service Control Manager, through advapi32 (ctypes), for install.cmd and its tests.

The API rather than ``sc.exe``: its answers are numbers, not text in the machine's language, a
stop can be waited for precisely, and the failure actions and their flag are set in one place.
Windows only; importing it elsewhere works, calling it raises OSError.
"""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Callable
from ctypes import wintypes
from dataclasses import dataclass

SC_MANAGER_ALL_ACCESS = 0xF003F
SERVICE_ALL_ACCESS = 0xF01FF
SERVICE_WIN32_OWN_PROCESS = 0x10
SERVICE_AUTO_START = 2
SERVICE_ERROR_NORMAL = 1
SERVICE_NO_CHANGE = 0xFFFFFFFF
SERVICE_CONTROL_STOP = 1
SC_STATUS_PROCESS_INFO = 0
WAIT_TIMEOUT = 0x102
ERROR_PROCESS_ABORTED = 1067
ERROR_SERVICE_SPECIFIC_ERROR = 1066  # the service's own code is then in service_exit
SYNCHRONIZE = 0x00100000
SERVICE_CONFIG_DESCRIPTION = 1
SERVICE_CONFIG_FAILURE_ACTIONS = 2
SERVICE_CONFIG_FAILURE_ACTIONS_FLAG = 4
SC_ACTION_RESTART = 1
ERROR_SERVICE_DOES_NOT_EXIST = 1060
ERROR_SERVICE_NOT_ACTIVE = 1062
ERROR_SERVICE_ALREADY_RUNNING = 1056
ERROR_SERVICE_MARKED_FOR_DELETE = 1072
ERROR_INVALID_LEVEL = 124

STOPPED, START_PENDING, STOP_PENDING, RUNNING = 1, 2, 3, 4
STATE_NAMES = {1: "stopped", 2: "start-pending", 3: "stop-pending", 4: "running", 5: "continue-pending", 6: "pause-pending", 7: "paused"}


class SERVICE_STATUS(ctypes.Structure):  # noqa: N801 - the Windows name
    _fields_ = [
        ("dwServiceType", wintypes.DWORD),
        ("dwCurrentState", wintypes.DWORD),
        ("dwControlsAccepted", wintypes.DWORD),
        ("dwWin32ExitCode", wintypes.DWORD),
        ("dwServiceSpecificExitCode", wintypes.DWORD),
        ("dwCheckPoint", wintypes.DWORD),
        ("dwWaitHint", wintypes.DWORD),
    ]


class SERVICE_STATUS_PROCESS(ctypes.Structure):  # noqa: N801
    _fields_ = [*SERVICE_STATUS._fields_, ("dwProcessId", wintypes.DWORD), ("dwServiceFlags", wintypes.DWORD)]


class SC_ACTION(ctypes.Structure):  # noqa: N801
    _fields_ = [("Type", ctypes.c_int), ("Delay", wintypes.DWORD)]


class SERVICE_FAILURE_ACTIONSW(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("dwResetPeriod", wintypes.DWORD),
        ("lpRebootMsg", wintypes.LPWSTR),
        ("lpCommand", wintypes.LPWSTR),
        ("cActions", wintypes.DWORD),
        ("lpsaActions", ctypes.POINTER(SC_ACTION)),
    ]


class SERVICE_DESCRIPTIONW(ctypes.Structure):  # noqa: N801
    _fields_ = [("lpDescription", wintypes.LPWSTR)]


class SERVICE_FAILURE_ACTIONS_FLAG(ctypes.Structure):  # noqa: N801
    _fields_ = [("fFailureActionsOnNonCrashFailures", wintypes.BOOL)]


class QUERY_SERVICE_CONFIGW(ctypes.Structure):  # noqa: N801
    _fields_ = [
        ("dwServiceType", wintypes.DWORD),
        ("dwStartType", wintypes.DWORD),
        ("dwErrorControl", wintypes.DWORD),
        ("lpBinaryPathName", wintypes.LPWSTR),
        ("lpLoadOrderGroup", wintypes.LPWSTR),
        ("dwTagId", wintypes.DWORD),
        ("lpDependencies", wintypes.LPWSTR),
        ("lpServiceStartName", wintypes.LPWSTR),
        ("lpDisplayName", wintypes.LPWSTR),
    ]


@dataclass(frozen=True)
class Status:
    state: int
    win32_exit: int
    service_exit: int
    process_id: int = 0  # the service host's, while it runs

    @property
    def name(self) -> str:
        return STATE_NAMES.get(self.state, str(self.state))


@dataclass(frozen=True)
class Config:
    start_type: int
    binary: str
    account: str
    display_name: str


# Each Windows API call below sits behind a sys.platform test, which also tells a type
# checker on another platform that the Windows half of ctypes is not there.
_NOT_WINDOWS = "the Service Control Manager exists only on Windows"


def _api() -> ctypes.CDLL:
    if sys.platform != "win32":
        raise OSError(_NOT_WINDOWS)
    return ctypes.WinDLL("advapi32", use_last_error=True)


def _last_error() -> int:
    if sys.platform != "win32":
        raise OSError(_NOT_WINDOWS)
    return ctypes.get_last_error()


def _check(ok: object, what: str) -> None:
    if sys.platform != "win32":
        raise OSError(_NOT_WINDOWS)
    if not ok:
        error = ctypes.get_last_error()
        raise ctypes.WinError(error, f"{what}: {error_text(error)}")


def process_alive(process_id: int) -> bool:
    """Whether a process still runs. Wine 8's service manager goes on saying "running" after a
    service host that never reported "stopped" has ended, so a caller checks the host itself."""
    if sys.platform != "win32":
        raise OSError(_NOT_WINDOWS)
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.OpenProcess.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.DWORD]
    handle = kernel32.OpenProcess(SYNCHRONIZE, False, process_id)
    if not handle:
        return False
    try:
        kernel32.WaitForSingleObject.argtypes = [wintypes.HANDLE, wintypes.DWORD]
        return bool(kernel32.WaitForSingleObject(handle, 0) == WAIT_TIMEOUT)
    finally:
        kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
        kernel32.CloseHandle(handle)


def error_text(code: int) -> str:
    """Windows' one-line text for an error code (a service's exit code, say)."""
    if sys.platform != "win32":
        return f"error {code}"
    return ctypes.FormatError(code).strip()


class Manager:
    """An open handle on the local SCM; use as a context manager."""

    def __init__(self) -> None:
        self.api = _api()
        self.api.OpenSCManagerW.restype = wintypes.HANDLE
        self.api.OpenServiceW.restype = wintypes.HANDLE
        self.api.CreateServiceW.restype = wintypes.HANDLE
        self.api.OpenServiceW.argtypes = [wintypes.HANDLE, wintypes.LPCWSTR, wintypes.DWORD]
        self.api.CloseServiceHandle.argtypes = [wintypes.HANDLE]
        handle = self.api.OpenSCManagerW(None, None, SC_MANAGER_ALL_ACCESS)
        _check(handle, "OpenSCManager (run elevated)")
        self.handle = handle

    def __enter__(self) -> Manager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.api.CloseServiceHandle(self.handle)

    def _open(self, name: str) -> int | None:
        handle = self.api.OpenServiceW(self.handle, name, SERVICE_ALL_ACCESS)
        if not handle:
            if _last_error() == ERROR_SERVICE_DOES_NOT_EXIST:
                return None
            _check(handle, f"OpenService {name}")
        return handle

    def exists(self, name: str) -> bool:
        handle = self._open(name)
        if handle is None:
            return False
        self.api.CloseServiceHandle(handle)
        return True

    def create_or_update(self, name: str, display: str, binary: str) -> None:
        """An automatic-start LocalSystem service running ``binary`` (a quoted command line)."""
        handle = self._open(name)
        if handle is None:
            api = self.api
            api.CreateServiceW.argtypes = [
                wintypes.HANDLE, wintypes.LPCWSTR, wintypes.LPCWSTR, wintypes.DWORD, wintypes.DWORD, wintypes.DWORD, wintypes.DWORD,
                wintypes.LPCWSTR, wintypes.LPCWSTR, wintypes.LPVOID, wintypes.LPCWSTR, wintypes.LPCWSTR, wintypes.LPCWSTR,
            ]  # fmt: skip
            handle = api.CreateServiceW(
                self.handle, name, display, SERVICE_ALL_ACCESS, SERVICE_WIN32_OWN_PROCESS, SERVICE_AUTO_START,
                SERVICE_ERROR_NORMAL, binary, None, None, None, None, None,
            )
            _check(handle, f"CreateService {name}")
        else:
            api = self.api
            api.ChangeServiceConfigW.argtypes = [wintypes.HANDLE] + [wintypes.DWORD] * 3 + [
                wintypes.LPCWSTR, wintypes.LPCWSTR, wintypes.LPVOID, wintypes.LPCWSTR, wintypes.LPCWSTR, wintypes.LPCWSTR,
                wintypes.LPCWSTR,
            ]
            ok = api.ChangeServiceConfigW(
                handle, SERVICE_WIN32_OWN_PROCESS, SERVICE_AUTO_START, SERVICE_ERROR_NORMAL, binary, None, None, None,
                "LocalSystem", "", display,
            )
            if not ok:
                self.api.CloseServiceHandle(handle)
                _check(ok, f"ChangeServiceConfig {name}")
        self.api.CloseServiceHandle(handle)

    def describe(self, name: str, text: str) -> None:
        self._config2(name, SERVICE_CONFIG_DESCRIPTION, SERVICE_DESCRIPTIONW(text), "description")

    def restart_on_failure(self, name: str, delays_ms: tuple[int, ...], reset_seconds: int) -> bool:
        """Restart after each delay in turn when the service process ends unasked.

        Also sets the flag (Vista and later) that counts a stop reported with an error code as a
        failure; returns False where the system has no such flag (XP, Wine 8): the service host
        then ends without reporting, which every version counts as a failure.
        """
        actions = (SC_ACTION * len(delays_ms))(*(SC_ACTION(SC_ACTION_RESTART, delay) for delay in delays_ms))
        config = SERVICE_FAILURE_ACTIONSW(reset_seconds, None, None, len(delays_ms), actions)
        self._config2(name, SERVICE_CONFIG_FAILURE_ACTIONS, config, "failure actions")
        try:
            self._config2(name, SERVICE_CONFIG_FAILURE_ACTIONS_FLAG, SERVICE_FAILURE_ACTIONS_FLAG(True), "failure actions flag")
        except OSError as exc:
            if getattr(exc, "winerror", None) != ERROR_INVALID_LEVEL:
                raise
            return False
        return True

    def _config2(self, name: str, level: int, value: ctypes.Structure, what: str) -> None:
        handle = self._require(name)
        try:
            self.api.ChangeServiceConfig2W.argtypes = [wintypes.HANDLE, wintypes.DWORD, wintypes.LPVOID]
            _check(self.api.ChangeServiceConfig2W(handle, level, ctypes.byref(value)), f"ChangeServiceConfig2 {name} ({what})")
        finally:
            self.api.CloseServiceHandle(handle)

    def _require(self, name: str) -> int:
        handle = self._open(name)
        if handle is None:
            raise OSError(f"there is no service {name!r}")
        return handle

    def status(self, name: str) -> Status | None:
        """The service's status; None if there is no such service. A host that ended without
        reporting counts as stopped, as Windows counts it (Wine 8 goes on saying running)."""
        handle = self._open(name)
        if handle is None:
            return None
        try:
            value = SERVICE_STATUS_PROCESS()
            needed = wintypes.DWORD()
            self.api.QueryServiceStatusEx.argtypes = [
                wintypes.HANDLE, ctypes.c_int, ctypes.POINTER(SERVICE_STATUS_PROCESS), wintypes.DWORD, ctypes.POINTER(wintypes.DWORD)
            ]  # fmt: skip
            ok = self.api.QueryServiceStatusEx(handle, SC_STATUS_PROCESS_INFO, ctypes.byref(value), ctypes.sizeof(value), ctypes.byref(needed))
            _check(ok, f"QueryServiceStatusEx {name}")
            if value.dwCurrentState != STOPPED and value.dwProcessId and not process_alive(value.dwProcessId):
                return Status(STOPPED, ERROR_PROCESS_ABORTED, 0)  # what Windows itself reports then
            return Status(value.dwCurrentState, value.dwWin32ExitCode, value.dwServiceSpecificExitCode, value.dwProcessId)
        finally:
            self.api.CloseServiceHandle(handle)

    def config(self, name: str) -> Config:
        handle = self._require(name)
        try:
            needed = wintypes.DWORD()
            self.api.QueryServiceConfigW.argtypes = [wintypes.HANDLE, wintypes.LPVOID, wintypes.DWORD, ctypes.POINTER(wintypes.DWORD)]
            self.api.QueryServiceConfigW(handle, None, 0, ctypes.byref(needed))
            buffer = ctypes.create_string_buffer(max(needed.value, ctypes.sizeof(QUERY_SERVICE_CONFIGW)) + 64)
            ok = self.api.QueryServiceConfigW(handle, buffer, len(buffer), ctypes.byref(needed))
            _check(ok, f"QueryServiceConfig {name}")
            value = QUERY_SERVICE_CONFIGW.from_buffer(buffer)
            return Config(value.dwStartType, value.lpBinaryPathName or "", value.lpServiceStartName or "", value.lpDisplayName or "")
        finally:
            self.api.CloseServiceHandle(handle)

    def failure_actions(self, name: str) -> tuple[int, list[tuple[int, int]]]:
        """(reset period in seconds, [(action type, delay ms), ...]) as the SCM stored them."""
        handle = self._require(name)
        try:
            needed = wintypes.DWORD()
            self.api.QueryServiceConfig2W.argtypes = [wintypes.HANDLE, wintypes.DWORD, wintypes.LPVOID, wintypes.DWORD, ctypes.POINTER(wintypes.DWORD)]
            self.api.QueryServiceConfig2W(handle, SERVICE_CONFIG_FAILURE_ACTIONS, None, 0, ctypes.byref(needed))
            buffer = ctypes.create_string_buffer(max(needed.value, ctypes.sizeof(SERVICE_FAILURE_ACTIONSW)) + 64)
            ok = self.api.QueryServiceConfig2W(handle, SERVICE_CONFIG_FAILURE_ACTIONS, buffer, len(buffer), ctypes.byref(needed))
            _check(ok, f"QueryServiceConfig2 {name}")
            value = SERVICE_FAILURE_ACTIONSW.from_buffer(buffer)
            return value.dwResetPeriod, [(value.lpsaActions[i].Type, value.lpsaActions[i].Delay) for i in range(value.cActions)]
        finally:
            self.api.CloseServiceHandle(handle)

    def start(self, name: str) -> None:
        handle = self._require(name)
        try:
            self.api.StartServiceW.argtypes = [wintypes.HANDLE, wintypes.DWORD, wintypes.LPVOID]
            if not self.api.StartServiceW(handle, 0, None) and _last_error() != ERROR_SERVICE_ALREADY_RUNNING:
                _check(False, f"StartService {name}")
        finally:
            self.api.CloseServiceHandle(handle)

    def request_stop(self, name: str) -> None:
        """Ask a running service to stop (no wait); nothing if it is not running."""
        handle = self._require(name)
        try:
            value = SERVICE_STATUS()
            self.api.ControlService.argtypes = [wintypes.HANDLE, wintypes.DWORD, ctypes.POINTER(SERVICE_STATUS)]
            if not self.api.ControlService(handle, SERVICE_CONTROL_STOP, ctypes.byref(value)):
                if _last_error() not in (ERROR_SERVICE_NOT_ACTIVE, 1061):  # 1061: cannot accept control now
                    _check(False, f"stop {name}")
        finally:
            self.api.CloseServiceHandle(handle)

    def wait_until(self, name: str, done: Callable[[Status], bool], timeout: float) -> Status | None:
        """Poll until ``done(status)`` or the service is gone; the last status seen."""
        deadline = time.monotonic() + timeout
        current = self.status(name)
        for _ in range(int(timeout / 0.25) + 1):
            if current is None or done(current) or time.monotonic() > deadline:
                break
            time.sleep(0.25)
            current = self.status(name)
        return current

    def delete(self, name: str) -> bool:
        """Mark the service for deletion; False if there was none."""
        handle = self._open(name)
        if handle is None:
            return False
        try:
            self.api.DeleteService.argtypes = [wintypes.HANDLE]
            if not self.api.DeleteService(handle) and _last_error() != ERROR_SERVICE_MARKED_FOR_DELETE:
                _check(False, f"DeleteService {name}")
        finally:
            self.api.CloseServiceHandle(handle)
        return True
