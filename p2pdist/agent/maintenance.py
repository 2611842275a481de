"""The agent's one timer: retries, counter flushes to SQLite, reports and cleanup, when due.

It sleeps until the earliest of them is due and visits only the packages concerned: packages
in error by retry time, and packages whose counters may move (downloading, or with peers). A
thousand complete packages nobody asks for cost no work but the report every report_interval.
"""

from __future__ import annotations

import heapq
import logging
from typing import TYPE_CHECKING

from p2pdist.agent.packages import ERROR, Package
from p2pdist.aio import wait_event
from p2pdist.engine.torrent import TorrentState

if TYPE_CHECKING:
    from p2pdist.agent.daemon import Agent

log = logging.getLogger("p2pdist.agent")


def activate(agent: Agent, package: Package) -> None:
    """Its counters may move now (it starts, or its torrent woke for a peer): flush them."""
    if package.key not in agent._active:
        agent._active.add(package.key)
        agent._due.set()


def retry_at(agent: Agent, package: Package, when: float) -> None:
    heapq.heappush(agent._retries, (when, package.key))
    agent._due.set()


async def run(agent: Agent) -> None:
    """Retries, counter flushes, reports and cleanup on one timer, which sleeps until the
    earliest of them is due and visits only the packages concerned (see ``__init__``)."""
    settings = agent.settings
    start = agent.ticks()
    next_flush = start + settings.flush_interval
    # The first check-in soon after start (its answer may hold pre-staging orders), then
    # one every report_interval.
    next_report = start + min(settings.report_debounce, settings.report_interval)
    next_cleanup = start
    while True:
        due = [next_cleanup]
        if agent._retries:
            due.append(agent._retries[0][0])
        if agent._active:
            due.append(next_flush)
        if agent.reporter is not None:
            due.append(next_report)  # the reporter sends what changed, and all once per refresh
        agent._due.clear()
        await wait_event(agent._due, max(0.0, min(due) - agent.ticks()))
        now = agent.ticks()
        agent._retry_due(now)
        if now >= next_flush:
            next_flush = now + settings.flush_interval
            agent._flush_active()
        if now >= next_report:
            next_report = now + settings.report_interval
            agent._spawn(agent._report_all())
        if now >= next_cleanup:
            next_cleanup = now + settings.cache.cleanup_interval
            try:
                await agent.cleanup()
            except Exception:
                log.exception("cleanup failed")


def retry_due(agent: Agent, now: float) -> None:
    """Start the retries that are due."""
    while agent._retries and agent._retries[0][0] <= now:
        _, key = heapq.heappop(agent._retries)
        package = agent.packages.get(key)
        if package is None or package.retry_at is None or package.retry_at > now or package.state != ERROR:
            continue  # removed, restarted, or pushed again for later
        if package.lock.locked():
            agent._retry_at(package, now + min(1.0, agent.settings.retry_interval))  # busy: look again soon
            continue
        package.retry_at = now + agent.settings.retry_interval
        agent._retry_at(package, package.retry_at)  # the next try, should this one not mend it
        agent._spawn(agent._retry(package))


def flush_active(agent: Agent) -> None:
    """Write the rows whose counters may have moved; forget those that went quiet."""
    for key in list(agent._active):
        package = agent.packages.get(key)
        if package is None or package.removed:
            agent._active.discard(key)
            continue
        agent._flush(package)
        torrent = package.torrent
        if torrent is None or torrent.state is TorrentState.ERROR or (torrent.state is TorrentState.SEEDING and not torrent.busy):
            agent._active.discard(key)


def flush(agent: Agent, package: Package) -> None:
    """Write the package's row (state, counters, times) to SQLite."""
    if agent.state is None or package.removed:
        return
    row = package.row
    if package.torrent is None or package.torrent.state is not TorrentState.STOPPED:
        row.state, row.error = package.state, package.error  # a stopped engine says nothing new
    live = package.totals()
    values = (row.state, row.error, *live, row.last_advertised, row.completed_at)
    if values == package.flushed:
        return  # nothing new: no write
    try:
        agent.state.update_package(
            row.info_hash,
            state=row.state,
            error=row.error,
            bytes_from_peers=live[0],
            bytes_from_webseed=live[1],
            uploaded=live[2],
            last_advertised=row.last_advertised,
            completed_at=row.completed_at,
        )
    except Exception as exc:  # a full disk must not take the agent down with it
        log.warning("cannot save state of %s: %s", row.info_hash, exc)
        return
    package.flushed = values


async def report_all(agent: Agent) -> None:
    """What changed since the last report to the site server (``reporting``)."""
    if agent.reporter is not None:
        await agent.reporter.report()
