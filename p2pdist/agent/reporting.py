"""Telling the site server what this PC's packages are doing: batched, changed-only, bounded.

The site server's console counts, per package and site, how many PCs have a package, which are
stuck and why, and how many bytes came from peers rather than over the WAN. It learns that from
these reports (the codec is ``tracker.reports``, shared with the server).

* **What**: one entry per package version the agent holds or could not get, made from the same
  ``PackageStatus`` the control API answers with, so the console and ``p2pdist status`` never
  disagree.
* **When**: every ``interval`` the entries that changed since the server last took them; every
  ``refresh`` all of them (so the server can tell a PC that is still there from one that went
  away); and ``debounce`` seconds after a change of state or problem (a download completes, the
  distribution point turns out to ignore Range), so the console shows it well within one
  interval. While nothing changes, an empty report is still sent every ``interval``: that is
  the agent's check-in, whose answer carries its site's pre-staging orders (``prestage``).
* **How much**: one POST per ``MAX_ENTRIES`` entries, the JSON without blanks. Entries carry
  totals, not increments, so a report that is sent again counts once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from p2pdist.httpio import read_capped

import aiohttp

from p2pdist.aio import stop_tasks
from p2pdist.control.schema import PackageStatus
from p2pdist.outcomes import State, problem_kind
from p2pdist.tracker.reports import MAX_ENTRIES, ReportEntry

log = logging.getLogger("p2pdist.agent.reporting")

Key = tuple[str, "int | None"]
MAX_ANSWER = 256 * 1024  # bytes of a report answer read (32 orders are about 6 KiB)


def entry_of(status: PackageStatus) -> ReportEntry:
    """The report entry for one package status."""
    return ReportEntry(
        package_id=status.package_id,
        version=status.version,
        info_hash=status.info_hash,
        state=State(status.state),
        progress=status.progress,
        problem=problem_kind(status.error_kind) if status.error_kind else None,
        error=status.error,
        in_use=status.in_use,
        completed=status.completed_at is not None or status.state == State.COMPLETE,
        from_peers=status.bytes_from_peers,
        from_webseed=status.bytes_from_webseed,
        uploaded=status.uploaded,
    )


def taken(entry: ReportEntry) -> tuple[object, ...]:
    """What the server took of an entry, to tell whether it changed since: the values of its
    JSON in their fixed order (a tuple of shared values, a third of the dict a thousand held
    packages would keep each)."""
    return tuple(entry.to_json().values())


def encode(entries: list[ReportEntry], orders_tag: str | None = None) -> bytes:
    body: dict[str, Any] = {"packages": [e.to_json() for e in entries]}
    if orders_tag:
        body["orders_tag"] = orders_tag
    return json.dumps(body, separators=(",", ":")).encode()


class Reporter:
    """Sends report entries to ``url`` (the site server's ``/api/report``)."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        url: str,
        statuses: Callable[[], list[PackageStatus]],
        *,
        refresh: float = 3600.0,
        debounce: float = 2.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_answer: Callable[[Any], None] | None = None,
    ) -> None:
        self.http = http
        self.url = url
        self.statuses = statuses
        self.refresh = refresh
        self.debounce = debounce
        self.timeout = timeout
        self.clock = clock
        self.on_answer = on_answer  # given each answer's JSON (the pre-staging orders)
        # The tag of the pre-staging orders fully acted on: the server leaves out the lists
        # while they still have this tag (the agent sets it, ``Agent.prestage``).
        self.orders_tag: str | None = None
        self._taken: dict[Key, tuple[object, ...]] = {}  # what the server last took, per package version (``taken``)
        self._last_full: float | None = None
        self._lock = asyncio.Lock()
        self._soon: asyncio.Task[None] | None = None
        self.sent_bytes = 0  # request bodies sent, for the traffic figures
        self.received_bytes = 0  # answer bodies read
        self.reports = 0  # POSTs answered

    def soon(self) -> None:
        """Something worth showing changed: report within ``debounce`` seconds (once for a burst)."""
        if self._soon is None or self._soon.done():
            self._soon = asyncio.ensure_future(self._after_debounce())

    async def _after_debounce(self) -> None:
        await asyncio.sleep(self.debounce)
        await self.report()

    async def report(self) -> None:
        """Send what changed (everything, once per ``refresh``); one report at a time."""
        async with self._lock:
            if self.http.closed:
                return
            now = self.clock()
            full = self._last_full is None or now - self._last_full >= self.refresh
            entries = {(e.package_id, e.version): e for e in map(entry_of, self.statuses())}
            for gone in set(self._taken) - set(entries):
                del self._taken[gone]
            due = [e for key, e in entries.items() if full or self._taken.get(key) != taken(e)]
            complete = True
            for start in range(0, max(1, len(due)), MAX_ENTRIES):  # nothing due: an empty check-in
                complete = await self._send(due[start : start + MAX_ENTRIES]) and complete
            if full and complete:
                self._last_full = now

    async def _send(self, entries: list[ReportEntry]) -> bool:
        body = encode(entries, self.orders_tag)
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            headers = {"Content-Type": "application/json"}
            async with self.http.post(self.url, data=body, headers=headers, timeout=timeout) as reply:
                self.sent_bytes += len(body)
                if reply.status != 200:
                    log.debug("report refused: HTTP %d", reply.status)
                    return False
                answer = await read_capped(reply.content, MAX_ANSWER)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.debug("report failed: %s", exc)
            return False
        self.reports += 1
        if answer is not None:
            self.received_bytes += len(answer)
            if self.on_answer is not None:
                try:
                    self.on_answer(json.loads(answer))
                except ValueError:
                    log.debug("report answer is not JSON")
        # Entries the server refused one by one (a package it never published) are not sent
        # again until they change or the next refresh: resending them would change nothing.
        for entry in entries:
            self._taken[(entry.package_id, entry.version)] = taken(entry)
        return True

    async def close(self) -> None:
        if self._soon is not None:
            await stop_tasks([self._soon], owner="reporter")
