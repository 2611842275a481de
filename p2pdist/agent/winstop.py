"""A graceful stop for a Windows agent that has no console to send Ctrl-Break to.

POSIX stops the agent with SIGTERM. Windows has no such signal: ``TerminateProcess`` kills it
without a ``stopped`` announce or saved resume data, and Ctrl-Break reaches only a process that
shares the sender's console (a service, or a child started without one, has none). So the agent
also waits on a named event, ``p2pdist-agent-stop-<pid>``, in its session's namespace; whoever
may open it (the agent's own account, SYSTEM and Administrators, by the event's default
security) stops that agent with ``request_stop(pid)``: the service launcher on a service stop,
the demo and the tests. C callers: ``OpenEventW(EVENT_MODIFY_STATE, FALSE, name)`` then
``SetEvent``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

EVENT_MODIFY_STATE = 0x0002
SYNCHRONIZE = 0x00100000
INFINITE = 0xFFFFFFFF
WAIT_OBJECT_0 = 0


def stop_event_name(pid: int) -> str:
    return f"p2pdist-agent-stop-{pid}"


def _kernel32():  # type: ignore[no-untyped-def]  # a ctypes.WinDLL, which exists only on Windows
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.CreateEventW.restype = wintypes.HANDLE
    kernel32.CreateEventW.argtypes = [ctypes.c_void_p, wintypes.BOOL, wintypes.BOOL, wintypes.LPCWSTR]
    kernel32.OpenEventW.restype = wintypes.HANDLE
    kernel32.OpenEventW.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.LPCWSTR]
    kernel32.SetEvent.argtypes = [wintypes.HANDLE]
    kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    kernel32.WaitForMultipleObjects.restype = wintypes.DWORD
    kernel32.WaitForMultipleObjects.argtypes = [wintypes.DWORD, ctypes.POINTER(wintypes.HANDLE), wintypes.BOOL, wintypes.DWORD]
    return kernel32


class StopWatcher:
    """A thread waiting on this process's stop event; ``on_stop`` runs in that thread once."""

    def __init__(self, on_stop: Callable[[], None], pid: int | None = None) -> None:
        import ctypes
        import os

        self._kernel32 = _kernel32()
        name = stop_event_name(os.getpid() if pid is None else pid)
        self._stop = self._kernel32.CreateEventW(None, True, False, name)
        if not self._stop:
            raise OSError(ctypes.get_last_error(), f"cannot create the stop event {name}")
        self._done = self._kernel32.CreateEventW(None, True, False, None)  # ends the thread at close()
        self._on_stop = on_stop
        self._thread = threading.Thread(target=self._wait, name="p2pdist-stop-event", daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        from ctypes import wintypes

        handles = (wintypes.HANDLE * 2)(self._stop, self._done)
        if self._kernel32.WaitForMultipleObjects(2, handles, False, INFINITE) == WAIT_OBJECT_0:
            self._on_stop()

    def close(self) -> None:
        self._kernel32.SetEvent(self._done)
        self._thread.join(timeout=5.0)
        for handle in (self._stop, self._done):
            self._kernel32.CloseHandle(handle)


def request_stop(pid: int) -> bool:
    """Ask the agent with process id ``pid`` to stop gracefully; False if it has no stop event."""
    if sys.platform != "win32":
        raise OSError("the stop event exists only on Windows; send SIGTERM")
    kernel32 = _kernel32()
    handle = kernel32.OpenEventW(EVENT_MODIFY_STATE, False, stop_event_name(pid))
    if not handle:
        return False
    try:
        return bool(kernel32.SetEvent(handle))
    finally:
        kernel32.CloseHandle(handle)
