"""A package's engine parts: started in the shared session, stopped; its completion and its errors.

A storage error (disk full) puts that one torrent in error; the agent takes it out of the
session and adds it again every ``retry_interval`` once there is room, so it resumes where it
stopped while the other packages carry on (the retries are the maintenance timer's).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from p2pdist.agent.packages import Package, flush
from p2pdist.aio import stop_tasks
from p2pdist.engine.torrent import Torrent, TorrentState
from p2pdist.engine.tracker_client import TrackerClient, same_origin_tiers
from p2pdist.errors import one_line
from p2pdist.outcomes import Problem
from p2pdist.storage.base import StorageError
from p2pdist.storage.files import FileStorage

if TYPE_CHECKING:
    from p2pdist.agent.daemon import Agent

log = logging.getLogger("p2pdist.agent")


async def start(agent: Agent, package: Package, *, startup: bool = False) -> None:
    if startup:
        async with agent.startup_slots, package.lock:
            await start_locked(agent, package)
            agent.hold_leased_files(package)
    else:
        async with package.lock:
            await start_locked(agent, package)


async def start_locked(agent: Agent, package: Package) -> None:
    if package.removed or agent.closing or package.torrent is not None:
        return
    assert agent.state is not None
    meta = package.meta
    directory = agent.settings.cache_dir / package.key
    package.starting, package.error, package.error_kind, package.retry_at = True, None, None, None
    package.last_attempt = agent.ticks()
    try:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {directory}: {exc.strerror}") from None
        storage = FileStorage(meta.info, directory, resume_path=agent.state.resume_path(package.key), info_hash=meta.info_hash)
        try:
            torrent = await agent.session.add_torrent(meta, storage)
        except BaseException:
            with contextlib.suppress(StorageError):
                await storage.close()
            raise
    except StorageError as exc:
        package.starting = False
        _failed(agent, package, str(exc), Problem.DISK_FULL if exc.disk_full else Problem.STORAGE)
        return
    except BaseException:
        package.starting = False
        raise
    package.starting = False
    package.torrent = torrent
    torrent.add_listener(functools.partial(_on_torrent_event, agent, package, torrent))  # smaller than a closure
    if torrent.state is TorrentState.ERROR:
        _failed(agent, package, torrent.error or "storage error", _torrent_problem(torrent))
    elif torrent.completed.is_set():
        _completed(agent, package)
    elif package.row.completed_at is not None:
        package.row.completed_at = None  # damaged since: being repaired
    agent.schedule.activate(package.key)
    site_trackers = same_origin_tiers(meta.trackers, agent.settings.repository_url)
    if meta.trackers and not site_trackers:
        log.error("%s: its torrent names no tracker of %s; not announcing anywhere", meta.info.package, agent.settings.repository_url)
    if site_trackers and agent.http is not None:
        package.tracker = TrackerClient(
            torrent, agent.http, port=agent.session.port, trackers=site_trackers,
            on_site_networks=agent.session.set_site_networks, on_problem=agent.report_soon, timetable=agent.timetable,
        )  # fmt: skip
        package.tracker.start()
    if agent.http is not None and not torrent.completed.is_set() and meta.web_seeds:
        from p2pdist.engine.webseed import WebSeed  # only downloads use it: an idle agent never imports it

        for url in meta.web_seeds:
            seed = WebSeed(torrent, url, agent.http, grace=agent.settings.web_seed_grace, on_problem=agent.report_soon)
            package.webseeds.append(seed)
            package.tasks.append(asyncio.ensure_future(seed.run()))
    flush(agent.state, package)


async def stop_locked(agent: Agent, package: Package, *, announce: bool) -> None:
    """Take the package out of the session, folding its counters into the row."""
    tasks, package.tasks = package.tasks, []
    package.verified_as = None
    await stop_tasks(tasks, owner=package.row.package_id)
    if package.tracker is not None:
        await package.tracker.close()
    torrent = package.torrent
    if torrent is None:
        return
    if announce and package.tracker is not None:
        await package.tracker.stop(timeout=3.0)
    await agent.session.remove_torrent(torrent.meta.info_hash)
    peers, webseed, uploaded = package.totals()
    package.row.bytes_from_peers, package.row.bytes_from_webseed, package.row.uploaded = peers, webseed, uploaded
    package.progress = torrent.progress
    package.torrent, package.tracker, package.webseeds = None, None, []


def _on_torrent_event(agent: Agent, package: Package, torrent: Torrent, event: str) -> None:
    if package.torrent is not torrent or agent.closing:
        return
    if event == "awake":
        agent.schedule.activate(package.key)
    elif event == "completed":
        _completed(agent, package)
    elif event == "error" and package.error is None:  # the first of a burst of failed writes
        _failed(agent, package, torrent.error or "storage error", _torrent_problem(torrent))


async def _note_checked(package: Package, torrent: Torrent) -> None:
    """The files' identity once every piece was hashed on arrival: what ``verify`` compares with."""
    identity = await torrent.storage.file_identity()
    if package.torrent is torrent and torrent.state is TorrentState.SEEDING:
        package.verified_as = identity


def _torrent_problem(torrent: Torrent) -> Problem:
    return Problem.DISK_FULL if torrent.disk_full else Problem.STORAGE


def _completed(agent: Agent, package: Package) -> None:
    if package.torrent is not None:
        # Every piece was hashed on arrival: that is the check a run needs, for as long as
        # the files keep the identity they have now.
        agent.spawn(_note_checked(package, package.torrent))
    if package.row.completed_at is None:
        package.row.completed_at = agent.clock()
        log.info("%s: complete", package.meta.info.package)
        agent.report_soon()
    package.progress = 1.0
    flush(agent.state, package)


def _failed(agent: Agent, package: Package, message: str, kind: Problem) -> None:
    package.error = one_line(message)
    package.error_kind = kind
    agent.report_soon()
    package.retry_at = agent.ticks() + agent.settings.retry_interval
    agent.schedule.retry_at(package.key, package.retry_at)
    package.free_at_error = free_bytes(agent.settings.cache_dir)
    log.error("%s: %s (retrying every %g s)", package.meta.info.package, package.error, agent.settings.retry_interval)
    flush(agent.state, package)


def free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0
