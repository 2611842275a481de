"""Threads that hash and write whole pieces for the receive path.

A download hands over one piece per 256 KiB-1 MiB received: a thousand hand-offs per GiB. Through
``run_in_executor`` each costs a ``concurrent.futures.Future`` (with its Condition), a chained
asyncio future and the executor's bookkeeping, about as much Python as receiving the piece's
last few blocks. Here a hand-off is one put on a C-level queue; the worker settles the caller's
asyncio future through ``call_soon_threadsafe``.

Writes to one torrent's files are serialized (``Storage`` holds a lock around ``_store``) while
hashes run in parallel: two threads writing the same file only spin on the kernel's inode lock.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

Done = Callable[[BaseException | None, Any], None]
_Job = tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[..., Any], tuple[Any, ...], Done | None]


def _settle(future: asyncio.Future[Any], on_done: Done | None, error: BaseException | None, result: object) -> None:
    """On the caller's loop: the submitter's own bookkeeping first, then the caller's future.

    ``on_done`` runs whether or not the caller still waits: what the job did on disk must be
    recorded even when the future was cancelled meanwhile.
    """
    try:
        if on_done is not None:
            on_done(error, result)
    finally:
        if not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)


class PieceWorkers:
    """A fixed set of daemon threads fed by one queue; started on first use.

    Daemon threads, like a process killed mid-write: a piece being written when the interpreter
    exits is not in the resume data yet (it is pending), so it is simply fetched again.
    """

    def __init__(self, count: int, *, name: str = "p2pdist-piece") -> None:
        self.count = max(1, count)
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._start_lock = threading.Lock()

    def submit(
        self, loop: asyncio.AbstractEventLoop, function: Callable[..., Any], *args: Any, on_done: Done | None = None
    ) -> asyncio.Future[Any]:
        """Run ``function(*args)`` on a worker; the returned future settles on ``loop``, right
        after ``on_done(error, result)`` runs there (even if the future was cancelled)."""
        if len(self._threads) < self.count:
            self._start()
        future = loop.create_future()
        self._jobs.put((loop, future, function, args, on_done))
        return future

    def _start(self) -> None:
        with self._start_lock:
            while len(self._threads) < self.count:
                thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _work(self) -> None:
        get = self._jobs.get
        while (job := get()) is not None:
            loop, future, function, args, on_done = job
            error: BaseException | None = None
            result: Any = None
            try:
                result = function(*args)
            except BaseException as exc:  # handed to the caller, like an executor would
                error = exc
            try:
                loop.call_soon_threadsafe(_settle, future, on_done, error, result)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting for this piece any more
            del job, future, args, on_done, error, result

    def shutdown(self) -> None:
        """Stop the threads once the queued jobs are done (tests; the process-wide pool lives on)."""
        with self._start_lock:
            for _ in self._threads:
                self._jobs.put(None)
            for thread in self._threads:
                thread.join()
            self._threads.clear()


_default: PieceWorkers | None = None
_default_lock = threading.Lock()


def default_piece_workers() -> PieceWorkers:
    """The process-wide piece workers: one per core."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PieceWorkers(os.cpu_count() or 1)
        return _default
