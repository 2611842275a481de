"""Callbacks due at loop times, all on one loop timer.

An agent holds a thousand tracker clients, each waiting up to half an hour for its next
announce. A loop timer each (uvloop's handle, its libuv timer and a copy of the context) is
about half a KiB apiece; here each wait is one small heap entry, and only the earliest one has
a loop timer. Callbacks run in the loop's thread at the loop times ``loop.call_at`` would run
them, in the order they are due (ties in the order they were scheduled, which asyncio's own
heap does not promise); a failing one is reported to the loop's exception handler and the
others still run.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable


class Due:
    """One callback waiting in a ``Timetable``; ``cancel()`` it as a timer handle."""

    __slots__ = ("when", "order", "callback")

    def __init__(self, when: float, order: int, callback: Callable[[], object] | None) -> None:
        self.when = when
        self.order = order  # ties run in the order they were scheduled
        self.callback = callback

    def __lt__(self, other: Due) -> bool:
        return (self.when, self.order) < (other.when, other.order)

    def cancel(self) -> None:
        """It will not run; its entry leaves the heap when it comes up (or at a compaction)."""
        self.callback = None

    def cancelled(self) -> bool:
        return self.callback is None


class Timetable:
    """Callbacks on one loop timer set for the earliest; make it inside a running loop."""

    __slots__ = ("_loop", "_heap", "_timer", "_armed_for", "_order", "_cancelled")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._heap: list[Due] = []
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None  # when the loop timer fires
        self._order = 0
        self._cancelled = 0  # a guess, for compaction: entries cancelled while in the heap

    def call_later(self, delay: float, callback: Callable[[], object]) -> Due:
        """Run ``callback()`` in ``delay`` seconds (``loop.call_later`` with one timer for all)."""
        self._order += 1
        due = Due(self._loop.time() + max(0.0, delay), self._order, callback)
        heapq.heappush(self._heap, due)
        self._arm()
        return due

    def cancel(self, due: Due) -> None:
        """``due.cancel()``, with the heap compacted once most of it is cancelled."""
        if due.callback is not None:
            due.cancel()
            self._cancelled += 1
            if self._cancelled > 64 and 2 * self._cancelled > len(self._heap):
                self._heap = [entry for entry in self._heap if entry.callback is not None]
                heapq.heapify(self._heap)
                self._cancelled = 0
                self._arm()

    def __len__(self) -> int:
        """Callbacks still to run."""
        return sum(entry.callback is not None for entry in self._heap)

    def close(self) -> None:
        """Drop every callback and the loop timer."""
        self._heap.clear()
        self._cancelled = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._armed_for = None

    def _arm(self) -> None:
        """The loop timer for the earliest live entry (none when nothing waits)."""
        heap = self._heap
        while heap and heap[0].callback is None:
            heapq.heappop(heap)
            self._cancelled = max(0, self._cancelled - 1)
        when = heap[0].when if heap else None
        if when == self._armed_for:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = when
        if when is not None:
            self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = self._armed_for = None
        # What the loop itself counts as due now (it may wake a little before ``when``).
        now = self._loop.time() + 0.001
        heap = self._heap
        ready = []
        while heap and heap[0].when <= now:  # first all that are due: what they schedule waits
            due = heapq.heappop(heap)
            callback, due.callback = due.callback, None
            if callback is None:
                self._cancelled = max(0, self._cancelled - 1)
            else:
                ready.append(callback)
        for callback in ready:
            try:
                callback()
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # as the loop's own handles report it
                self._loop.call_exception_handler({"message": f"Exception in callback {callback!r}", "exception": exc})
        self._arm()
