"""The agent: one engine session for every package of this PC, its cache, leases and cleanup.

Theory of operation
-------------------
A *package* here is one torrent, i.e. one (PackageID, version). ``ensure`` is the only way in:
it fetches the signed torrent from the site server's repository, refuses anything that is not
a private torrent validly signed by a configured key for exactly the PackageID (and version)
asked for, stores it, and starts it in the shared session. Every ensure refreshes the package's
*advertisement*: the agent seeds it while it is advertised and at least ``min_seed_days`` after.

Each package's data lives in ``cache_dir/<info-hash>/<name>`` (staged as ``<name>.part`` until
complete), its torrent and resume data in ``state_dir``, its row in SQLite. After a restart
every row is started again: storage trusts its resume data and re-hashes only what it cannot
trust, so verified pieces are never fetched twice and complete packages seed at once.

A storage error (disk full) puts that one torrent in error; the agent takes it out of the
session and adds it again every ``retry_interval`` once there is room, so it resumes where it
stopped while the other packages carry on. Leases tie a package to a running command's pid; a
leased package is never removed, and a lease whose process is gone is void. Cleanup asks the
pure ``cache.plan_cleanup`` what to remove.

Counters (bytes from peers, from the web seed, uploaded) are the sum over every engine
instance the package has had, kept in SQLite and reported to the site server (``reporting``)
with each package's state and problem, which it turns into the per-site console.

Every problem has one ``outcomes.Problem`` kind beside its one line: a package's own error
(disk full, a refused torrent) first, else what keeps a download from completing (the web
seed, the tracker), so ``downloading 0.0%`` never hides why.

A package the repository does not publish (never, or no longer: retired) is its own outcome,
``not-published``, not a network fault. A cached copy still serves (a complete one runs; an
incomplete one goes on with the sources it has and says ``not-published``). The first refusal
of each PackageID is remembered across restarts (``unpublished_since``), so the wrapper can
stop asking SMS to retry once a grace has passed; a torrent fetched for it again forgets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp

from p2pdist.aio import stop_tasks, wait_event
from p2pdist.agent.cache import CachedPackage, Removal, RetentionLimits, plan_cleanup
from p2pdist.agent.config import AgentSettings
from p2pdist.control.schema import PackageStatus
from p2pdist.agent.pids import pid_alive
from p2pdist.agent.pins import Pin, hold
from p2pdist.agent.reporting import Reporter
from p2pdist.engine.session import Session
from p2pdist.agent.state import AgentState, LeaseRow, PackageRow, secure_folder
from p2pdist.engine.torrent import Torrent, TorrentState
from p2pdist.agent.torrent_source import RepositoryUnavailable, TorrentRefused, check_torrent, download_torrent
from p2pdist.engine.tracker_client import TrackerClient, same_origin_tiers
from p2pdist.engine.webseed import WebSeed
from p2pdist.errors import OutputError, P2pdistError, RemoteError, one_line
from p2pdist.metainfo import Metainfo, normalize_package_id, parse_metainfo
from p2pdist.outcomes import Problem, State, most_blocking
from p2pdist.storage.base import StorageError
from p2pdist.storage.files import FileStorage


log = logging.getLogger("p2pdist.agent")

FETCHING = State.FETCHING.value
CHECKING = State.CHECKING.value
DOWNLOADING = State.DOWNLOADING.value
COMPLETE = State.COMPLETE.value
ERROR = State.ERROR.value
STATES = tuple(state.value for state in State)

_ENGINE_STATES = {
    TorrentState.CHECKING: CHECKING,
    TorrentState.DOWNLOADING: DOWNLOADING,
    TorrentState.SEEDING: COMPLETE,
    TorrentState.ERROR: ERROR,
    TorrentState.STOPPED: CHECKING,  # only between a stop and the next start
}
_HEX40 = re.compile(r"\A[0-9a-f]{40}\Z")


class AgentError(RemoteError):
    """A control request the agent refuses; ``status`` is the HTTP status to answer with."""

    status = 400


class BadRequest(AgentError):
    status = 400


class UnknownPackage(AgentError):
    status = 404


class Conflict(AgentError):
    status = 409


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Fetch:
    """An ensure whose torrent is being fetched, or whose torrent was refused."""

    package_id: str
    version: int | None
    at: float
    state: str = FETCHING
    error: str | None = None
    kind: Problem | None = None


@dataclass
class Package:
    """One package version in the cache: its row, torrent and running engine parts."""

    row: PackageRow
    meta: Metainfo
    torrent: Torrent | None = None
    tracker: TrackerClient | None = None
    webseeds: list[WebSeed] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    starting: bool = False
    removed: bool = False
    error: str | None = None
    error_kind: Problem | None = None
    retry_at: float | None = None  # ticks
    free_at_error: int = 0  # free bytes in the cache when it failed: more means room came back
    last_attempt: float = 0.0  # ticks
    progress: float = 0.0
    flushed: tuple[object, ...] | None = None  # the row's values as last written to SQLite
    verified_as: tuple[object, ...] | None = None  # file identity when the last check passed
    verify_job: asyncio.Task[None] | None = None
    verify_progress: float = 0.0
    unpublished: bool = False  # the repository no longer has it (retired): no new torrent, no tracker

    @property
    def key(self) -> str:
        return self.row.info_hash

    @property
    def state(self) -> str:
        if self.starting:
            return CHECKING
        if self.torrent is None:
            return ERROR if self.error else CHECKING
        return _ENGINE_STATES[self.torrent.state]

    def totals(self) -> tuple[int, int, int]:
        """(from peers, from web seed, uploaded) over every engine instance so far."""
        row = self.row
        peers, webseed, uploaded = row.bytes_from_peers, row.bytes_from_webseed, row.uploaded
        if self.torrent is not None:
            peers += self.torrent.bytes_from_peers
            uploaded += self.torrent.upload_meter.total
            webseed += self.torrent.bytes_from_webseed
        return peers, webseed, uploaded


class Agent:
    """The daemon's core; the control server and the CLI drive it through its public methods."""

    def __init__(
        self, settings: AgentSettings, *, clock: Callable[[], float] = time.time, ticks: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.keys = settings.trusted_keys()
        # Wall clock for what is stored or shown (advertised, completed, seed until: days that
        # outlive a restart); ticks for durations in memory (retries), which a clock step must
        # not stretch or cut.
        self.clock = clock
        self.ticks = ticks
        self.session = Session(settings.engine)
        self.packages: dict[str, Package] = {}
        self.fetches: dict[str, Fetch] = {}
        self.leases: dict[str, LeaseRow] = {}
        self.pins: dict[str, Pin] = {}  # lease -> the package's files held open (Windows)
        self.refusals: dict[str, float] = {}  # PackageID -> first "not published" (wall clock)
        self.state: AgentState | None = None
        self.http: aiohttp.ClientSession | None = None
        self._id_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._startup = asyncio.Semaphore(settings.startup_concurrency)
        self._closing = False
        self.reporter: Reporter | None = None
        # What the maintenance timer has to visit, so that it visits nothing else: packages in
        # error by retry time (a heap of (ticks, info-hash); stale entries are skipped) and
        # packages whose counters may move (downloading, or with peers). A thousand complete
        # packages nobody asks for cost no work but the report every report_interval.
        self._retries: list[tuple[float, str]] = []
        self._active: set[str] = set()
        self._due = asyncio.Event()  # something was added to the above: the timer looks again
        self.limits = RetentionLimits(
            settings.cache.min_seed_seconds, settings.cache.keep_seconds, settings.cache.max_bytes
        )

    # ------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the state, listen for peers, and start every package known from last time."""
        try:
            self.settings.cache_dir.mkdir(parents=True, exist_ok=True)
            secure_folder(self.settings.cache_dir)
        except OSError as exc:
            raise StorageError(f"cannot create cache folder {self.settings.cache_dir}: {exc.strerror}") from None
        self.state = AgentState(self.settings.state_dir)
        await self.session.start()
        bind = self.settings.engine.bind_host
        connector = aiohttp.TCPConnector(local_addr=(bind, 0) if bind else None, limit=64)
        self.http = aiohttp.ClientSession(connector=connector, headers={"User-Agent": self.settings.engine.client_name})
        self.reporter = Reporter(
            self.http, f"{self.settings.repository_url}/api/report", self.list, refresh=self.settings.report_refresh,
            debounce=min(self.settings.report_debounce, self.settings.report_interval),
        )  # fmt: skip
        self.leases = {row.lease: row for row in self.state.leases()}
        self.refusals = self.state.refusals()
        if self.state.quarantined is not None:
            self._rebuild_rows()
        for row in self.state.packages():
            self._restore(row)
        self._spawn(self._maintenance())
        log.info(
            "agent started: %d packages, peer port %d, cache %s", len(self.packages), self.session.port, self.settings.cache_dir
        )

    def _rebuild_rows(self) -> None:
        """After a damaged database was moved aside: one row per stored torrent that still
        passes the trust check; storage then re-checks the cached data against it."""
        assert self.state is not None
        now = self.clock()
        rebuilt = 0
        for info_hash, data in self.state.torrent_files():
            try:
                identity = parse_metainfo(data).info.package
                if identity is None:
                    raise TorrentRefused("it names no package")
                meta = check_torrent(data, self.keys, identity.package_id, identity.version)
                if meta.info_hash_hex != info_hash:
                    raise TorrentRefused("it belongs to another info-hash")
            except (TorrentRefused, P2pdistError) as exc:
                log.error("not rebuilding %s: %s", info_hash, exc)
                self.state.forget_files(info_hash)
                continue
            self.state.save_package(
                PackageRow(info_hash, identity.package_id, identity.version, meta.info.name, meta.info.total_length, added_at=now, last_advertised=now)
            )
            self.state.saw_version(identity.package_id, identity.version)
            rebuilt += 1
        log.warning("rebuilt %d packages from their stored torrents; their data is checked again", rebuilt)

    def _restore(self, row: PackageRow) -> None:
        assert self.state is not None
        data = self.state.load_torrent(row.info_hash)
        try:
            if data is None:
                raise TorrentRefused("its torrent file is missing")
            meta = check_torrent(data, self.keys, row.package_id, row.version)
            if meta.info_hash_hex != row.info_hash:
                raise TorrentRefused("its torrent file belongs to another info-hash")
        except TorrentRefused as exc:
            log.error("dropping %s v%d (%s): %s", row.package_id, row.version, row.info_hash, exc)
            self.state.delete_package(row.info_hash)
            self.state.forget_files(row.info_hash)
            return
        package = Package(row, meta, progress=1.0 if row.completed_at else 0.0)
        self.packages[row.info_hash] = package
        self._spawn(self._start(package, startup=True))

    async def close(self) -> None:
        """Stop gracefully: ``stopped`` to the tracker, resume data and counters saved."""
        if self._closing:
            return
        self._closing = True
        await stop_tasks(self._tasks, owner="agent")
        if self.reporter is not None:
            # While the packages still run, so the last report says what they are, not "checking".
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._report_all()
            await self.reporter.close()
        packages = list(self.packages.values())
        await stop_tasks([task for package in packages for task in package.tasks], owner="agent")
        for package in packages:
            package.tasks = []
        await asyncio.gather(*(p.tracker.close() for p in packages if p.tracker is not None))
        stops = [p.tracker.stop(timeout=3.0) for p in packages if p.tracker is not None and p.torrent is not None]
        if stops:
            await asyncio.gather(*stops, return_exceptions=True)
        for pin in self.pins.values():
            pin.close()
        self.pins.clear()
        await self.session.close()
        for package in packages:
            self._flush(package)
        if self.http is not None:
            await self.http.close()
        if self.state is not None:
            self.state.close()
        log.info("agent stopped")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("agent task failed", exc_info=task.exception())

    # ------------------------------------------------------------------------ ensure

    def _id_lock(self, package_id: str) -> asyncio.Lock:
        lock = self._id_locks.get(package_id)
        if lock is None:
            lock = self._id_locks[package_id] = asyncio.Lock()
        return lock

    async def ensure(self, package_id: str, version: int | None = None) -> PackageStatus:
        """Make sure the package (latest version unless given) is cached or downloading."""
        package_id = self._package_id(package_id)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 2**31):
            raise BadRequest("version must be a non-negative integer")
        async with self._id_lock(package_id):
            now = self.clock()
            if version is not None:
                known = self._find(package_id, version)
                if known is not None:
                    self.fetches.pop(package_id, None)
                    self._advertise(known, now)
                    return self.status_of(known)
            fetch = Fetch(package_id, version, now)
            self.fetches[package_id] = fetch
            try:
                assert self.http is not None
                data = await download_torrent(
                    self.http, self.settings.repository_url, package_id, version,
                    limit=self.settings.max_torrent_bytes, timeout=self.settings.fetch_timeout,
                )  # fmt: skip
            except RepositoryUnavailable as exc:
                known = self._find(package_id, version)
                if known is None:
                    return self._fetch_failed(fetch, str(exc), exc.kind)
                log.warning("%s: %s; using the cached version %d", package_id, exc, known.row.version)
                self.fetches.pop(package_id, None)
                self._advertise(known, now)
                return self.status_of(known)
            except TorrentRefused as exc:
                if exc.kind is Problem.NOT_PUBLISHED:
                    return self._not_published(fetch, str(exc), now)
                return self._fetch_failed(fetch, str(exc), exc.kind)
            self._published_again(package_id)
            try:
                meta = check_torrent(data, self.keys, package_id, version)
            except TorrentRefused as exc:
                return self._fetch_failed(fetch, f"torrent refused: {exc}", exc.kind)
            offered = meta.info.package.version if meta.info.package is not None else 0
            newest = self._newest_seen(package_id)
            if version is None and newest is not None and offered < newest:
                # A stale mirror, a proxy or a tampered repository must not roll a PC back to
                # an old signed version; a program that asks for one by number still gets it.
                message = f"the repository's latest is version {offered}, older than version {newest} seen before: refusing a rollback"
                known = self._find(package_id, newest)
                if known is None:
                    return self._fetch_failed(fetch, f"{message} (a program may ask for version {offered} by number)", Problem.TORRENT_REFUSED)
                log.warning("%s: %s; using the cached version %d", package_id, message, newest)
                self.fetches.pop(package_id, None)
                self._advertise(known, now)
                return self.status_of(known)
            self.fetches.pop(package_id, None)
            package = self.packages.get(meta.info_hash_hex)
            if package is None:
                try:
                    package = self._add(meta, data, now)
                except OutputError as exc:
                    return self._fetch_failed(fetch, str(exc), Problem.STORAGE)
            self._advertise(package, now)
            return self.status_of(package)

    def _newest_seen(self, package_id: str) -> int | None:
        """The newest version of ``package_id`` this agent ever took (kept after its removal)."""
        assert self.state is not None
        cached = [p.row.version for p in self.packages.values() if p.row.package_id == package_id]
        seen = self.state.newest_version(package_id)
        return max([*cached, *([seen] if seen is not None else [])], default=None)

    def _package_id(self, text: str) -> str:
        try:
            return normalize_package_id(text)
        except (ValueError, AttributeError) as exc:
            raise BadRequest(str(exc)) from None

    def _not_published(self, fetch: Fetch, message: str, now: float) -> PackageStatus:
        """The repository has no torrent for the request: remember since when, and use a
        cached copy if there is one (a retired package a program still runs from)."""
        package_id = fetch.package_id
        if package_id not in self.refusals:
            self.refusals[package_id] = now
            if self.state is not None:
                with contextlib.suppress(sqlite3.Error):  # a full disk must not turn this into a fault
                    self.state.note_refusal(package_id, now)
        known = self._find(package_id, fetch.version)
        if known is None:
            return self._fetch_failed(fetch, message, Problem.NOT_PUBLISHED)
        self.fetches.pop(package_id, None)
        if not known.unpublished:
            known.unpublished = True
            log.warning("%s: not published any more (%s); using the cached version %d", package_id, message, known.row.version)
            self._report_soon()
        self._advertise(known, now)
        return self.status_of(known)

    def _published_again(self, package_id: str) -> None:
        if self.refusals.pop(package_id, None) is not None and self.state is not None:
            with contextlib.suppress(sqlite3.Error):
                self.state.forget_refusal(package_id)
        for package in self.packages.values():
            if package.row.package_id == package_id:
                package.unpublished = False

    def _fetch_failed(self, fetch: Fetch, message: str, kind: Problem) -> PackageStatus:
        changed = (fetch.state, fetch.kind) != (ERROR, kind)
        fetch.state, fetch.error, fetch.kind = ERROR, one_line(message), kind
        log.warning("%s: %s", fetch.package_id, fetch.error)
        if changed:
            self._report_soon()
        return self._fetch_status(fetch)

    def _report_soon(self) -> None:
        if self.reporter is not None and not self._closing:
            self.reporter.soon()

    def _add(self, meta: Metainfo, data: bytes, now: float) -> Package:
        assert self.state is not None and meta.info.package is not None
        key = meta.info_hash_hex
        row = PackageRow(
            key, meta.info.package.package_id, meta.info.package.version, meta.info.name, meta.info.total_length,
            state=CHECKING, added_at=now, last_advertised=now,
        )  # fmt: skip
        try:
            self.state.save_torrent(key, data)
            self.state.save_package(row)
        except (OutputError, sqlite3.Error) as exc:
            self.state.forget_files(key)
            raise OutputError(f"cannot store {meta.info.package}: {exc}") from None
        self.state.saw_version(row.package_id, row.version)
        package = Package(row, meta)
        self.packages[key] = package
        log.info("%s: added %s (%d bytes, %s)", meta.info.package, meta.info.name, meta.info.total_length, key)
        self._spawn(self._start(package))
        return package

    def _advertise(self, package: Package, now: float) -> None:
        package.row.last_advertised = max(package.row.last_advertised, now)
        if package.state == ERROR and package.retry_at is not None:
            package.retry_at = min(package.retry_at, self.ticks())  # someone needs it now: retry soon
            self._retry_at(package, package.retry_at)
        self._flush(package)

    # ------------------------------------------------------------------------ engine

    async def _start(self, package: Package, *, startup: bool = False) -> None:
        if startup:
            async with self._startup, package.lock:
                await self._start_locked(package)
                self._pin_again(package)
        else:
            async with package.lock:
                await self._start_locked(package)

    def _pin_again(self, package: Package) -> None:
        """Leases that outlived the agent's last run hold their files again (Windows, agent.pins).

        As taking a lease does: the files are held first, then compared with what was last
        proved, here the file states the start-up check just judged (resume data or hashing);
        a lease whose files cannot be held or changed keeps the package but holds nothing.
        """
        torrent = package.torrent
        rows = [row for row in self.leases.values() if row.info_hash == package.key and row.lease not in self.pins]
        if not rows or torrent is None or not isinstance(torrent.storage, FileStorage):
            return
        storage = torrent.storage
        for row in rows:
            try:
                if package.state != COMPLETE:
                    raise StorageError(f"it is {package.state} after the start")
                storage.close_descriptors()
                pin = hold(storage.data_paths())
                if storage.file_identity_now() != storage.start_identity:
                    pin.close()
                    raise StorageError("its files changed since the start-up check")
            except (OSError, StorageError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                log.warning("%s: the lease of process %d holds no files: %s", package.meta.info.package, row.pid, why)
                continue
            self.pins[row.lease] = pin
            if pin:
                log.info("%s: the lease of process %d holds its files again", package.meta.info.package, row.pid)

    async def _start_locked(self, package: Package) -> None:
        if package.removed or self._closing or package.torrent is not None:
            return
        assert self.state is not None
        meta = package.meta
        directory = self.settings.cache_dir / package.key
        package.starting, package.error, package.error_kind, package.retry_at = True, None, None, None
        package.last_attempt = self.ticks()
        try:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create {directory}: {exc.strerror}") from None
            storage = FileStorage(meta.info, directory, resume_path=self.state.resume_path(package.key), info_hash=meta.info_hash)
            try:
                torrent = await self.session.add_torrent(meta, storage)
            except BaseException:
                with contextlib.suppress(StorageError):
                    await storage.close()
                raise
        except StorageError as exc:
            package.starting = False
            self._failed(package, str(exc), Problem.DISK_FULL if exc.disk_full else Problem.STORAGE)
            return
        except BaseException:
            package.starting = False
            raise
        package.starting = False
        package.torrent = torrent
        torrent.add_listener(lambda event: self._on_torrent_event(package, torrent, event))
        if torrent.state is TorrentState.ERROR:
            self._failed(package, torrent.error or "storage error", self._torrent_problem(torrent))
        elif torrent.completed.is_set():
            self._completed(package)
        elif package.row.completed_at is not None:
            package.row.completed_at = None  # damaged since: being repaired
        self._activate(package)
        site_trackers = same_origin_tiers(meta.trackers, self.settings.repository_url)
        if meta.trackers and not site_trackers:
            log.error("%s: its torrent names no tracker of %s; not announcing anywhere", meta.info.package, self.settings.repository_url)
        if site_trackers and self.http is not None:
            package.tracker = TrackerClient(
                torrent, self.http, port=self.session.port, trackers=site_trackers,
                on_site_networks=self.session.set_site_networks, on_problem=self._report_soon,
            )  # fmt: skip
            package.tracker.start()
        if self.http is not None and not torrent.completed.is_set():
            for url in meta.web_seeds:
                seed = WebSeed(torrent, url, self.http, grace=self.settings.web_seed_grace, on_problem=self._report_soon)
                package.webseeds.append(seed)
                package.tasks.append(asyncio.ensure_future(seed.run()))
        self._flush(package)

    async def _stop_locked(self, package: Package, *, announce: bool) -> None:
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
        await self.session.remove_torrent(torrent.meta.info_hash)
        peers, webseed, uploaded = package.totals()
        package.row.bytes_from_peers, package.row.bytes_from_webseed, package.row.uploaded = peers, webseed, uploaded
        package.progress = torrent.progress
        package.torrent, package.tracker, package.webseeds = None, None, []

    def _on_torrent_event(self, package: Package, torrent: Torrent, event: str) -> None:
        if package.torrent is not torrent or self._closing:
            return
        if event == "awake":
            self._activate(package)
        elif event == "completed":
            self._completed(package)
        elif event == "error" and package.error is None:  # the first of a burst of failed writes
            self._failed(package, torrent.error or "storage error", self._torrent_problem(torrent))

    @staticmethod
    def _torrent_problem(torrent: Torrent) -> Problem:
        return Problem.DISK_FULL if torrent.disk_full else Problem.STORAGE

    def _completed(self, package: Package) -> None:
        if package.torrent is not None:
            # Every piece was hashed on arrival: that is the check a run needs, for as long as
            # the files keep the identity they have now.
            self._spawn(self._note_checked(package, package.torrent))
        if package.row.completed_at is None:
            package.row.completed_at = self.clock()
            log.info("%s: complete", package.meta.info.package)
            self._report_soon()
        package.progress = 1.0
        self._flush(package)

    def _failed(self, package: Package, message: str, kind: Problem) -> None:
        package.error = one_line(message)
        package.error_kind = kind
        self._report_soon()
        package.retry_at = self.ticks() + self.settings.retry_interval
        self._retry_at(package, package.retry_at)
        package.free_at_error = self._free_bytes()
        log.error("%s: %s (retrying every %g s)", package.meta.info.package, package.error, self.settings.retry_interval)
        self._flush(package)

    def _free_bytes(self) -> int:
        try:
            return shutil.disk_usage(self.settings.cache_dir).free
        except OSError:
            return 0

    def _worth_retrying(self, package: Package, now: float) -> bool:
        """Room came back (free space grew by a piece since the failure), or it has been a while.

        The free-space test saves re-fetching a piece per retry on a disk that is still full;
        the slow unconditional retry covers what it cannot see (quotas, other errors).
        """
        if self._free_bytes() >= package.free_at_error + 2 * package.meta.info.piece_length:
            return True
        return now - package.last_attempt >= 10 * self.settings.retry_interval

    async def _retry(self, package: Package) -> None:
        """Restart a package that stopped on an error; storage resumes from its resume data."""
        async with package.lock:
            if package.removed or self._closing or package.state != ERROR:
                return
            if not self._worth_retrying(package, self.ticks()):
                return
            log.info("%s: retrying after: %s", package.meta.info.package, package.error)
            await self._stop_locked(package, announce=False)
            await self._start_locked(package)

    # ------------------------------------------------------------------------ removal

    async def remove(self, package_id: str) -> None:
        """Remove every cached version of a package; Conflict if one is in use."""
        package_id = self._package_id(package_id)
        async with self._id_lock(package_id):
            versions = [p for p in self.packages.values() if p.row.package_id == package_id]
            if not versions and package_id not in self.fetches:
                raise UnknownPackage(f"{package_id} is not in the cache")
            in_use = self.in_use()
            busy = [p for p in versions if p.key in in_use]
            if busy:
                raise Conflict(f"{package_id} v{busy[0].row.version} is in use by a running command")
            self.fetches.pop(package_id, None)
            if self.refusals.pop(package_id, None) is not None and self.state is not None:
                self.state.forget_refusal(package_id)
            for package in versions:
                await self._remove(package, "removed on request")

    async def _remove(self, package: Package, reason: str) -> None:
        assert self.state is not None
        async with package.lock:
            if package.removed:
                return
            package.removed = True
            await self._stop_locked(package, announce=True)
            self.packages.pop(package.key, None)
            self.state.delete_package(package.key)
            self.state.forget_files(package.key)
        await self._delete_folder(self.settings.cache_dir / package.key)
        log.info("%s: removed (%s)", package.meta.info.package, reason)

    async def _delete_folder(self, folder: Path) -> None:
        def delete() -> None:
            shutil.rmtree(folder, ignore_errors=True)

        await asyncio.get_running_loop().run_in_executor(None, delete)

    async def cleanup(self, now: float | None = None) -> list[Removal]:
        """Apply the retention policy once; returns what was removed."""
        now = self.clock() if now is None else now
        in_use = self.in_use()
        cached = [CachedPackage(p.key, p.row.size, p.row.last_advertised) for p in self.packages.values()]
        removals = plan_cleanup(cached, now, self.limits, in_use)
        done = []
        for removal in removals:
            package = self.packages.get(removal.key)
            if package is None:
                continue
            async with self._id_lock(package.row.package_id):
                # An ensure may have advertised it while we waited for the lock.
                if package.removed or package.key in self.in_use():
                    continue
                if now < package.row.last_advertised + self.limits.min_seed:
                    continue
                await self._remove(package, removal.reason)
                done.append(removal)
        await self._sweep_orphans(in_use)
        return done

    async def _sweep_orphans(self, in_use: set[str]) -> None:
        """Folders named like an info-hash that no package owns (a crash between steps)."""
        try:
            entries = list(self.settings.cache_dir.iterdir())
        except OSError:
            return
        for entry in entries:
            if _HEX40.match(entry.name) and entry.name not in self.packages and entry.name not in in_use and entry.is_dir():
                log.info("removing orphaned cache folder %s", entry)
                await self._delete_folder(entry)

    # ------------------------------------------------------------------------ verify

    async def verify(self, package_id: str) -> PackageStatus:
        """Check the package before a run; the answer comes within ``verify_answer`` seconds.

        The check re-hashes every piece from the files at their paths and passes only if their
        identity (size, mtime, change time, inode) did not move while it ran; it is not repeated
        while the files keep that identity. A longer check goes on after the answer, which then
        says ``checking`` with the check's progress; the next call joins it. A damaged package
        goes back to downloading to be repaired.
        """
        package = self._selected_package(self._package_id(package_id))
        torrent = package.torrent
        if package.state in (CHECKING, DOWNLOADING) and (package.verify_job is None or package.verify_job.done()):
            return self.status_of(package)  # not complete: nothing to run, nothing to check yet
        if package.state == COMPLETE and package.verified_as is not None and torrent is not None:
            if await torrent.storage.file_identity() == package.verified_as:
                return self.status_of(package)
        job = package.verify_job
        if job is None or job.done():
            package.verify_progress = 0.0
            job = package.verify_job = self._spawn(self._verify(package))
        done, _ = await asyncio.wait({job}, timeout=self.settings.verify_answer)
        if package.removed:
            raise UnknownPackage(f"{package_id} is not in the cache")
        if not done:
            status = self.status_of(package)
            return replace(status, state=CHECKING, progress=round(package.verify_progress, 4), path=None, completed_at=None)
        return self.status_of(package)

    async def _note_checked(self, package: Package, torrent: Torrent) -> None:
        identity = await torrent.storage.file_identity()
        if package.torrent is torrent and torrent.state is TorrentState.SEEDING:
            package.verified_as = identity

    async def _verify(self, package: Package) -> None:
        async with package.lock:
            if package.removed:
                return
            package.verified_as = None
            torrent = package.torrent
            if torrent is not None and torrent.state in (TorrentState.SEEDING, TorrentState.DOWNLOADING):
                storage = torrent.storage
                before = await storage.file_identity()
                have = await storage.recheck(lambda done, total: setattr(package, "verify_progress", done / total if total else 1.0))
                after = await storage.file_identity()
                if have.all() and torrent.state is TorrentState.SEEDING and before == after:
                    package.verified_as = after
                    return
                why = "files changed while being checked" if before != after else f"{have.count} of {len(have)} pieces verify"
                log.warning("%s: %s; repairing", package.meta.info.package, why)
                await self._stop_locked(package, announce=False)
            else:
                # Not running (error, or still checking): start over without resume data, so
                # every piece is hashed again.
                await self._stop_locked(package, announce=False)
                assert self.state is not None
                self.state.forget_resume(package.key)
            await self._start_locked(package)

    # ------------------------------------------------------------------------ leases

    def acquire(self, package_id: str, pid: int, version: int | None = None) -> str:
        """Protect the package from removal while process ``pid`` runs; Conflict unless complete."""
        package_id = self._package_id(package_id)
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise BadRequest("pid must be a positive integer")
        package = self._find(package_id, version) if version is not None else self._selected_package(package_id)
        if package is None:
            raise UnknownPackage(f"{package_id} v{version} is not in the cache")
        if package.state != COMPLETE:
            raise Conflict(f"{package_id} v{package.row.version} is not complete ({package.state})")
        if not pid_alive(pid):
            raise BadRequest(f"process {pid} does not exist")
        assert self.state is not None
        pin = self._pin(package)
        lease = LeaseRow(secrets.token_hex(16), package.key, pid, self.clock())
        try:
            self.state.add_lease(lease)
        except BaseException:
            pin.close()
            raise
        self.leases[lease.lease] = lease
        self.pins[lease.lease] = pin
        log.info("%s: leased to process %d", package.meta.info.package, pid)
        return lease.lease

    def _pin(self, package: Package) -> Pin:
        """Hold the package's files against change (Windows, agent.pins) and make sure they are
        still the files the last check proved: nothing can swap them from here on."""
        torrent = package.torrent
        if torrent is None or not isinstance(torrent.storage, FileStorage):
            return Pin()
        storage = torrent.storage
        storage.close_descriptors()
        try:
            pin = hold(storage.data_paths())
        except OSError as exc:
            raise Conflict(f"{package.row.package_id} v{package.row.version}: {exc.strerror}; try again") from None
        try:
            changed = package.verified_as is not None and storage.file_identity_now() != package.verified_as
        except (OSError, StorageError):
            changed = True
        if changed:
            pin.close()
            package.verified_as = None  # the next verify hashes it all again
            raise Conflict(f"{package.row.package_id} v{package.row.version} changed since it was checked; check it again")
        return pin

    def release(self, lease: str) -> None:
        assert self.state is not None
        if self.leases.pop(lease, None) is None:
            raise UnknownPackage("no such lease")
        self._unpin(lease)
        self.state.delete_lease(lease)

    def _unpin(self, lease: str) -> None:
        pin = self.pins.pop(lease, None)
        if pin is not None:
            pin.close()

    def in_use(self) -> set[str]:
        """Info-hashes with a live lease; void leases (process gone) are dropped on the way."""
        live = set()
        for lease in list(self.leases.values()):
            if pid_alive(lease.pid):
                live.add(lease.info_hash)
            else:
                del self.leases[lease.lease]
                self._unpin(lease.lease)
                if self.state is not None:
                    self.state.delete_lease(lease.lease)
        return live

    # ------------------------------------------------------------------------ status

    def _find(self, package_id: str, version: int | None) -> Package | None:
        """A cached version of ``package_id``: that version, or the newest when None."""
        versions = [p for p in self.packages.values() if p.row.package_id == package_id and not p.removed]
        if version is not None:
            versions = [p for p in versions if p.row.version == version]
        return max(versions, key=lambda p: (p.row.version, p.row.last_advertised), default=None)

    def _current(self, package_id: str) -> Package | None:
        """The version most recently asked for (what status and leases refer to)."""
        versions = [p for p in self.packages.values() if p.row.package_id == package_id and not p.removed]
        return max(versions, key=lambda p: (p.row.last_advertised, p.row.version), default=None)

    def _selected_package(self, package_id: str) -> Package:
        package = self._current(package_id)
        if package is None:
            raise UnknownPackage(f"{package_id} is not in the cache")
        return package

    def status(self, package_id: str) -> PackageStatus:
        package_id = self._package_id(package_id)
        package = self._current(package_id)
        fetch = self.fetches.get(package_id)
        if fetch is not None and (package is None or fetch.at >= package.row.last_advertised):
            return self._fetch_status(fetch)
        if package is None:
            raise UnknownPackage(f"{package_id} is not in the cache")
        return self.status_of(package)

    def list(self) -> list[PackageStatus]:
        in_use = self.in_use()
        statuses = [self.status_of(p, in_use) for p in self.packages.values()]
        statuses += [self._fetch_status(f) for f in self.fetches.values()]
        return sorted(statuses, key=lambda s: (s.package_id, s.version if s.version is not None else -1))

    def status_of(self, package: Package, in_use: set[str] | None = None) -> PackageStatus:
        row, torrent = package.row, package.torrent
        state = package.state
        if torrent is not None:
            package.progress = torrent.progress
        problem = self._problem(package, state)
        kind, error = problem if problem is not None else (None, None)
        peers, webseed, uploaded = package.totals()
        return PackageStatus(
            package_id=row.package_id,
            version=row.version,
            info_hash=row.info_hash,
            name=row.name,
            state=state,
            progress=round(package.progress, 4),
            size=row.size,
            bytes_from_peers=peers,
            bytes_from_webseed=webseed,
            uploaded=uploaded,
            peers=len(torrent.peers) if torrent is not None else 0,
            download_rate=round(torrent.download_meter.rate) if torrent is not None else 0,
            upload_rate=round(torrent.upload_meter.rate) if torrent is not None else 0,
            path=str(self.package_path(package)) if state == COMPLETE else None,
            error=error,
            error_kind=None if kind is None else kind.value,
            tracker_error=one_line(package.tracker.status.last_error) if package.tracker and package.tracker.status.last_error else None,
            in_use=package.key in (self.in_use() if in_use is None else in_use),
            unpublished_since=iso(self.refusals.get(row.package_id)) if kind is Problem.NOT_PUBLISHED else None,
            last_advertised=iso(row.last_advertised) or "",
            completed_at=iso(row.completed_at) if state == COMPLETE else None,
            seed_until=iso(row.last_advertised + self.limits.min_seed) or "",
        )

    def _problem(self, package: Package, state: str) -> tuple[Problem, str] | None:
        """The package's own error; else, while it is not complete, the most blocking problem
        of its sources (web seeds, tracker)."""
        if state == ERROR and package.error:
            error = package.error
            if package.retry_at is not None:
                error = f"{error} (retrying every {self.settings.retry_interval:g} s)"
            return package.error_kind or Problem.OTHER, error
        if state == COMPLETE:
            return None
        if package.unpublished:
            what = f"{package.row.package_id} v{package.row.version}"
            return Problem.NOT_PUBLISHED, f"{what} is not published in the repository any more; its cached copy is incomplete"
        found = [(seed.last_kind, one_line(seed.last_error or "")) for seed in package.webseeds if seed.last_kind is not None]
        tracker = package.tracker.status if package.tracker is not None else None
        if tracker is not None and tracker.problem is not None:
            found.append((tracker.problem, one_line(tracker.last_error or "")))
        return most_blocking(found)

    def _fetch_status(self, fetch: Fetch) -> PackageStatus:
        return PackageStatus(
            package_id=fetch.package_id,
            version=fetch.version,
            name=fetch.package_id,
            state=fetch.state,
            error=fetch.error,
            error_kind=None if fetch.kind is None else fetch.kind.value,
            unpublished_since=iso(self.refusals.get(fetch.package_id)) if fetch.kind is Problem.NOT_PUBLISHED else None,
            last_advertised=iso(fetch.at) or "",
            seed_until=iso(fetch.at + self.limits.min_seed) or "",
        )

    def package_path(self, package: Package) -> Path:
        return self.settings.cache_dir / package.key / package.meta.info.name

    # ------------------------------------------------------------------------ periodic work

    def _activate(self, package: Package) -> None:
        """Its counters may move now (it starts, or its torrent woke for a peer): flush them."""
        if package.key not in self._active:
            self._active.add(package.key)
            self._due.set()

    def _retry_at(self, package: Package, when: float) -> None:
        heapq.heappush(self._retries, (when, package.key))
        self._due.set()

    async def _maintenance(self) -> None:
        """Retries, counter flushes, reports and cleanup on one timer, which sleeps until the
        earliest of them is due and visits only the packages concerned (see ``__init__``)."""
        settings = self.settings
        start = self.ticks()
        next_flush = start + settings.flush_interval
        next_report = start + settings.report_interval
        next_cleanup = start
        while True:
            due = [next_cleanup]
            if self._retries:
                due.append(self._retries[0][0])
            if self._active:
                due.append(next_flush)
            if self.reporter is not None:
                due.append(next_report)  # the reporter sends what changed, and all once per refresh
            self._due.clear()
            await wait_event(self._due, max(0.0, min(due) - self.ticks()))
            now = self.ticks()
            self._retry_due(now)
            if now >= next_flush:
                next_flush = now + settings.flush_interval
                self._flush_active()
            if now >= next_report:
                next_report = now + settings.report_interval
                self._spawn(self._report_all())
            if now >= next_cleanup:
                next_cleanup = now + settings.cache.cleanup_interval
                try:
                    await self.cleanup()
                except Exception:
                    log.exception("cleanup failed")

    def _retry_due(self, now: float) -> None:
        """Start the retries that are due."""
        while self._retries and self._retries[0][0] <= now:
            _, key = heapq.heappop(self._retries)
            package = self.packages.get(key)
            if package is None or package.retry_at is None or package.retry_at > now or package.state != ERROR:
                continue  # removed, restarted, or pushed again for later
            if package.lock.locked():
                self._retry_at(package, now + min(1.0, self.settings.retry_interval))  # busy: look again soon
                continue
            package.retry_at = now + self.settings.retry_interval
            self._retry_at(package, package.retry_at)  # the next try, should this one not mend it
            self._spawn(self._retry(package))

    def _flush_active(self) -> None:
        """Write the rows whose counters may have moved; forget those that went quiet."""
        for key in list(self._active):
            package = self.packages.get(key)
            if package is None or package.removed:
                self._active.discard(key)
                continue
            self._flush(package)
            torrent = package.torrent
            if torrent is None or torrent.state is TorrentState.ERROR or (torrent.state is TorrentState.SEEDING and not torrent.busy):
                self._active.discard(key)

    def _flush(self, package: Package) -> None:
        """Write the package's row (state, counters, times) to SQLite."""
        if self.state is None or package.removed:
            return
        row = package.row
        if package.torrent is None or package.torrent.state is not TorrentState.STOPPED:
            row.state, row.error = package.state, package.error  # a stopped engine says nothing new
        live = package.totals()
        values = (row.state, row.error, *live, row.last_advertised, row.completed_at)
        if values == package.flushed:
            return  # nothing new: no write
        try:
            self.state.update_package(
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

    async def _report_all(self) -> None:
        """What changed since the last report to the site server (``reporting``)."""
        if self.reporter is not None:
            await self.reporter.report()
