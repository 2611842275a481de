"""An ensure's path: the signed torrent from the repository, checked, stored and started.

A package the repository does not publish (never, or no longer: retired) is its own outcome,
``not-published``, not a network fault. A cached copy still serves (a complete one runs; an
incomplete one goes on with the sources it has and says ``not-published``). The first refusal
of each PackageID is remembered across restarts (``unpublished_since``), so the wrapper can
stop asking SMS to retry once a grace has passed; a torrent fetched for it again forgets it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from typing import TYPE_CHECKING

from p2pdist.agent import running
from p2pdist.agent.errors import BadRequest
from p2pdist.agent.packages import CHECKING, ERROR, Fetch, Package, find_package, flush, parse_package_id
from p2pdist.agent.state import PackageRow
from p2pdist.agent.torrent_source import RepositoryUnavailable, TorrentRefused, check_torrent, download_torrent, vouch_for
from p2pdist.control.schema import PackageStatus
from p2pdist.errors import OutputError, one_line
from p2pdist.metainfo import Metainfo
from p2pdist.outcomes import Problem

if TYPE_CHECKING:
    from p2pdist.agent.daemon import Agent

log = logging.getLogger("p2pdist.agent")


async def ensure(agent: Agent, package_id: str, version: int | None = None, *, advertised_at: float | None = None) -> PackageStatus:
    """``Agent.ensure``: the cached version asked for, else the repository's torrent, checked
    (no rollback to an older version than seen before), stored and started."""
    package_id = parse_package_id(package_id)
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 2**31):
        raise BadRequest("version must be a non-negative integer")
    async with agent.id_lock(package_id):
        now = agent.clock()
        stamp = now if advertised_at is None else min(now, advertised_at)
        if version is not None:
            known = find_package(agent.packages, package_id, version)
            if known is not None:
                agent.fetches.pop(package_id, None)
                _advertise(agent, known, stamp)
                return agent.status_of(known)
        fetch = Fetch(package_id, version, now)
        agent.fetches[package_id] = fetch
        try:
            assert agent.http is not None
            data = await download_torrent(
                agent.http, agent.settings.repository_url, package_id, version,
                limit=agent.settings.max_torrent_bytes, timeout=agent.settings.fetch_timeout,
            )  # fmt: skip
        except RepositoryUnavailable as exc:
            known = find_package(agent.packages, package_id, version)
            if known is None:
                return _fetch_failed(agent, fetch, str(exc), exc.kind)
            log.warning("%s: %s; using the cached version %d", package_id, exc, known.row.version)
            agent.fetches.pop(package_id, None)
            _advertise(agent, known, now)
            return agent.status_of(known)
        except TorrentRefused as exc:
            if exc.kind is Problem.NOT_PUBLISHED:
                return _not_published(agent, fetch, str(exc), now)
            return _fetch_failed(agent, fetch, str(exc), exc.kind)
        _published_again(agent, package_id)
        try:
            meta = check_torrent(data, agent.keys, package_id, version)
        except TorrentRefused as exc:
            return _fetch_failed(agent, fetch, f"torrent refused: {exc}", exc.kind)
        offered = meta.info.package.version if meta.info.package is not None else 0
        newest = _newest_seen(agent, package_id)
        if version is None and newest is not None and offered < newest:
            # A stale mirror, a proxy or a tampered repository must not roll a PC back to
            # an old signed version; a program that asks for one by number still gets it.
            message = f"the repository's latest is version {offered}, older than version {newest} seen before: refusing a rollback"
            known = find_package(agent.packages, package_id, newest)
            if known is None:
                return _fetch_failed(agent, fetch, f"{message} (a program may ask for version {offered} by number)", Problem.TORRENT_REFUSED)
            log.warning("%s: %s; using the cached version %d", package_id, message, newest)
            agent.fetches.pop(package_id, None)
            _advertise(agent, known, now)
            return agent.status_of(known)
        agent.fetches.pop(package_id, None)
        package = agent.packages.get(meta.info_hash_hex)
        if package is None:
            try:
                package = _add(agent, meta, data, now, stamp)
            except OutputError as exc:
                return _fetch_failed(agent, fetch, str(exc), Problem.STORAGE)
        _advertise(agent, package, stamp)
        return agent.status_of(package)


def _newest_seen(agent: Agent, package_id: str) -> int | None:
    """The newest version of ``package_id`` this agent ever took (kept after its removal)."""
    assert agent.state is not None
    cached = [p.row.version for p in agent.packages.values() if p.row.package_id == package_id]
    seen = agent.state.newest_version(package_id)
    return max([*cached, *([seen] if seen is not None else [])], default=None)


def _not_published(agent: Agent, fetch: Fetch, message: str, now: float) -> PackageStatus:
    """The repository has no torrent for the request: remember since when, and use a
    cached copy if there is one (a retired package a program still runs from)."""
    package_id = fetch.package_id
    if package_id not in agent.refusals:
        agent.refusals[package_id] = now
        if agent.state is not None:
            with contextlib.suppress(sqlite3.Error):  # a full disk must not turn this into a fault
                agent.state.note_refusal(package_id, now)
    known = find_package(agent.packages, package_id, fetch.version)
    if known is None:
        return _fetch_failed(agent, fetch, message, Problem.NOT_PUBLISHED)
    agent.fetches.pop(package_id, None)
    if not known.unpublished:
        known.unpublished = True
        log.warning("%s: not published any more (%s); using the cached version %d", package_id, message, known.row.version)
        agent.report_soon()
    _advertise(agent, known, now)
    return agent.status_of(known)


def _published_again(agent: Agent, package_id: str) -> None:
    if agent.refusals.pop(package_id, None) is not None and agent.state is not None:
        with contextlib.suppress(sqlite3.Error):
            agent.state.forget_refusal(package_id)
    for package in agent.packages.values():
        if package.row.package_id == package_id:
            package.unpublished = False


def _fetch_failed(agent: Agent, fetch: Fetch, message: str, kind: Problem) -> PackageStatus:
    changed = (fetch.state, fetch.kind) != (ERROR, kind)
    fetch.state, fetch.error, fetch.kind = ERROR, one_line(message), kind
    log.warning("%s: %s", fetch.package_id, fetch.error)
    if changed:
        agent.report_soon()
    return agent.fetch_status(fetch)


def _add(agent: Agent, meta: Metainfo, data: bytes, now: float, advertised: float) -> Package:
    assert agent.state is not None and meta.info.package is not None
    key = meta.info_hash_hex
    row = PackageRow(
        key, meta.info.package.package_id, meta.info.package.version, meta.info.name, meta.info.total_length,
        state=CHECKING, added_at=now, last_advertised=advertised,
    )  # fmt: skip
    try:
        agent.state.save_torrent(key, data, vouch_for(data, meta))
        agent.state.save_package(row)
    except (OutputError, sqlite3.Error) as exc:
        agent.state.forget_files(key)
        raise OutputError(f"cannot store {meta.info.package}: {exc}") from None
    agent.state.saw_version(row.package_id, row.version)
    package = Package(row, meta)
    agent.packages[key] = package
    log.info("%s: added %s (%d bytes, %s)", meta.info.package, meta.info.name, meta.info.total_length, key)
    agent.spawn(running.start(agent, package))
    return package


def _advertise(agent: Agent, package: Package, now: float) -> None:
    package.row.last_advertised = max(package.row.last_advertised, now)
    if package.state == ERROR and package.retry_at is not None:
        package.retry_at = min(package.retry_at, agent.ticks())  # someone needs it now: retry soon
        agent.schedule.retry_at(package.key, package.retry_at)
    flush(agent.state, package)
