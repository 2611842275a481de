"""Waiting and stopping in asyncio the same way everywhere, correct on Python 3.11.

On 3.11 ``asyncio.wait_for`` loses a ``cancel()`` that arrives in the loop iteration in which the
awaited future completes (CPython gh-86296; 3.12 rebuilt ``wait_for`` on ``asyncio.timeout``).
The task told to stop carries on, and whoever awaits it waits for ever: that is how ``p2pdist
get`` once sat idle after a complete download, its tracker loop woken by ``completed`` in the
very iteration it was cancelled. So p2pdist never calls ``wait_for`` (a test keeps it so):
bounded waits go through ``asyncio.timeout``, which is correct on 3.11, or through the helpers
here, and every owner of background tasks stops them with ``stop_tasks``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("p2pdist.aio")

STOP_BOUND = 10.0
"""Seconds a cancelled task gets to finish its clean-up before its owner goes on without it."""


class Flag:
    """An event that is set once and never cleared, whose ``asyncio.Event`` (a deque and 760
    bytes) exists only once someone waits: a torrent has two, and most are never waited on."""

    __slots__ = ("_set", "_event")

    def __init__(self) -> None:
        self._set = False
        self._event: asyncio.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> bool:
        if self._set:
            return True
        if self._event is None:
            self._event = asyncio.Event()
        return await self._event.wait()


async def wait_event(event: asyncio.Event | Flag, timeout: float | None) -> bool:
    """True once ``event`` is set, False if ``timeout`` seconds pass first (None: no limit)."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], *, bound: float = STOP_BOUND, owner: str = "") -> None:
    """Cancel ``tasks`` and wait until they end, at most ``bound`` seconds.

    Their results and errors are consumed (a task that failed was logged where it failed, or
    is logged here); a task still running after ``bound`` is logged and left behind rather than
    holding its owner's shutdown for ever. A cancellation of the caller itself propagates.
    """
    tasks = list(tasks)
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    done, pending = await asyncio.wait(tasks, timeout=bound)
    for task in done:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.debug("%s: task %s ended with %r while stopping", owner or "p2pdist", task.get_name(), error)
    if pending:
        names = ", ".join(sorted(task.get_name() for task in pending))
        log.error("%s: %d task(s) still running %.0f s after they were cancelled: %s", owner or "p2pdist", len(pending), bound, names)


async def stop_accepting(server: asyncio.AbstractServer) -> None:
    """Accept no more connections on ``server``, then give those accepted a moment ago their
    transports and ``connection_made`` (asyncio sets an accepted connection up one loop turn
    after the accept, and calls ``connection_made`` one turn later). Call it before
    ``server.close()``: a close in that window makes the transport fail to attach and leaves
    the socket open and unowned, the client's connection hanging (CPython gh-109564,
    gh-155934). Afterwards the owner closes every connection its protocols hold."""
    loop = asyncio.get_running_loop()
    try:
        for sock in server.sockets:  # type: ignore[attr-defined]  # asyncio and uvloop servers have it; AbstractServer does not declare it
            loop.remove_reader(sock.fileno())
    except NotImplementedError:  # a proactor loop (Windows) accepts without a reader
        return
    for _ in range(2):  # the accept task's first step, then connection_made
        await asyncio.sleep(0)
