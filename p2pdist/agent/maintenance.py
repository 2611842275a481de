"""The agent's one timer: retries, counter flushes to SQLite, reports and cleanup, when due.

A package in error is restarted every ``retry_interval`` while it is worth it (room came back
on the disk, or it has been a while), so it resumes where it stopped.

It sleeps until the earliest of them is due and visits only the packages concerned: packages
in error by retry time, and packages whose counters may move (downloading, or with peers). A
thousand complete packages nobody asks for cost no work but the report every report_interval.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from typing import TYPE_CHECKING

from p2pdist.agent.packages import ERROR, Package, flush
from p2pdist.agent.running import free_bytes, start_locked, stop_locked
from p2pdist.aio import wait_event
from p2pdist.engine.torrent import TorrentState

if TYPE_CHECKING:
    from p2pdist.agent.daemon import Agent

log = logging.getLogger("p2pdist.agent")


class Schedule:
    """What the timer has to visit, so that it visits nothing else: packages in error by retry
    time (a heap of (ticks, info-hash); stale entries are skipped) and packages whose counters
    may move (downloading, or with peers)."""

    def __init__(self) -> None:
        self.retries: list[tuple[float, str]] = []
        self.active: set[str] = set()
        self.due = asyncio.Event()  # something was added to the above: the timer looks again

    def activate(self, key: str) -> None:
        """Its counters may move now (it starts, or its torrent woke for a peer): flush them."""
        if key not in self.active:
            self.active.add(key)
            self.due.set()

    def retry_at(self, key: str, when: float) -> None:
        heapq.heappush(self.retries, (when, key))
        self.due.set()


async def run(agent: Agent) -> None:
    """Retries, counter flushes, reports and cleanup on one timer, which sleeps until the
    earliest of them is due and visits only the packages concerned (``Schedule``)."""
    settings = agent.settings
    start = agent.ticks()
    next_flush = start + settings.flush_interval
    # The first check-in soon after start (its answer may hold pre-staging orders), then
    # one every report_interval.
    next_report = start + min(settings.report_debounce, settings.report_interval)
    next_cleanup = start
    while True:
        due = [next_cleanup]
        if agent.schedule.retries:
            due.append(agent.schedule.retries[0][0])
        if agent.schedule.active:
            due.append(next_flush)
        if agent.reporter is not None:
            due.append(next_report)  # the reporter sends what changed, and all once per refresh
        agent.schedule.due.clear()
        await wait_event(agent.schedule.due, max(0.0, min(due) - agent.ticks()))
        now = agent.ticks()
        _retry_due(agent, now)
        if now >= next_flush:
            next_flush = now + settings.flush_interval
            _flush_active(agent)
        if now >= next_report:
            next_report = now + settings.report_interval
            agent.spawn(report(agent))
        if now >= next_cleanup:
            next_cleanup = now + settings.cache.cleanup_interval
            try:
                await agent.cleanup()
            except Exception:
                log.exception("cleanup failed")


def _retry_due(agent: Agent, now: float) -> None:
    """Start the retries that are due."""
    while agent.schedule.retries and agent.schedule.retries[0][0] <= now:
        _, key = heapq.heappop(agent.schedule.retries)
        package = agent.packages.get(key)
        if package is None or package.retry_at is None or package.retry_at > now or package.state != ERROR:
            continue  # removed, restarted, or pushed again for later
        if package.lock.locked():
            agent.schedule.retry_at(package.key, now + min(1.0, agent.settings.retry_interval))  # busy: look again soon
            continue
        package.retry_at = now + agent.settings.retry_interval
        agent.schedule.retry_at(package.key, package.retry_at)  # the next try, should this one not mend it
        agent.spawn(_retry(agent, package))


def _flush_active(agent: Agent) -> None:
    """Write the rows whose counters may have moved; forget those that went quiet."""
    for key in list(agent.schedule.active):
        package = agent.packages.get(key)
        if package is None or package.removed:
            agent.schedule.active.discard(key)
            continue
        flush(agent.state, package)
        torrent = package.torrent
        if torrent is None or torrent.state is TorrentState.ERROR or (torrent.state is TorrentState.SEEDING and not torrent.busy):
            agent.schedule.active.discard(key)


async def report(agent: Agent) -> None:
    """What changed since the last report to the site server (``reporting``)."""
    if agent.reporter is not None:
        await agent.reporter.report()


def _worth_retrying(agent: Agent, package: Package, now: float) -> bool:
    """Room came back (free space grew by a piece since the failure), or it has been a while.

    The free-space test saves re-fetching a piece per retry on a disk that is still full;
    the slow unconditional retry covers what it cannot see (quotas, other errors).
    """
    if free_bytes(agent.settings.cache_dir) >= package.free_at_error + 2 * package.meta.info.piece_length:
        return True
    return now - package.last_attempt >= 10 * agent.settings.retry_interval


async def _retry(agent: Agent, package: Package) -> None:
    """Restart a package that stopped on an error; storage resumes from its resume data."""
    async with package.lock:
        if package.removed or agent.closing or package.state != ERROR:
            return
        if not _worth_retrying(agent, package, agent.ticks()):
            return
        log.info("%s: retrying after: %s", package.meta.info.package, package.error)
        await stop_locked(agent, package, announce=False)
        await start_locked(agent, package)
