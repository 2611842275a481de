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

Counters (bytes from peers, from the web seed, uploaded) are the sum over every engine
instance the package has had, kept in SQLite and reported to the site server (``reporting``)
with each package's state and problem, which it turns into the per-site console.

``Agent`` is the coordinator: it owns what the parts share (settings, session, HTTP session,
state, the packages) and the public surface the control server, the service and the tests use;
each job is a module of its own: ``packages`` (what is held per package), ``fetching`` (an
ensure's path), ``running`` (a package's engine parts, errors and retries), ``leases``,
``verify``, ``retention`` (removal and cleanup), ``statuses`` (rendering a ``PackageStatus``),
``maintenance`` (the one timer: retries, flushes, reports, cleanup) and ``prestage`` (the site's
pre-staging orders).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp

from p2pdist.aio import stop_tasks
from p2pdist.agent import fetching, maintenance, prestage, retention, running, verify
from p2pdist.agent.cache import Removal, RetentionLimits
from p2pdist.agent.config import AgentSettings
from p2pdist.agent.errors import AgentError, BadRequest, Conflict, UnknownPackage
from p2pdist.agent.leases import Leases
from p2pdist.agent.packages import STATES, Fetch, Package, current_package, find_package, flush, parse_package_id, selected_package
from p2pdist.agent.pins import Pin
from p2pdist.agent.prestage import StageOrder
from p2pdist.agent.reporting import Reporter
from p2pdist.agent.state import AgentState, LeaseRow, PackageRow, PrestagedRow, secure_folder
from p2pdist.agent.statuses import fetch_status, package_status
from p2pdist.agent.torrent_source import TorrentRefused, check_torrent, recheck_stored, vouch_for
from p2pdist.control.schema import PackageStatus
from p2pdist.engine.session import Session
from p2pdist.engine.timetable import Timetable
from p2pdist.errors import P2pdistError
from p2pdist.metainfo import parse_metainfo
from p2pdist.storage.base import StorageError

# Where callers found them before the agent's jobs had modules of their own.
__all__ = ["STATES", "Agent", "AgentError", "BadRequest", "Conflict", "UnknownPackage"]

log = logging.getLogger("p2pdist.agent")


class Agent:
    """The daemon's core; the control server and the CLI drive it through its public methods.

    The agent's modules drive it too, through what it shares with them: ``spawn`` (a task the
    agent stops on close), ``id_lock`` (one request per PackageID at a time), ``report_soon``,
    ``closing``, ``status_of`` and ``fetch_status``.
    """

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
        self._leases = Leases(clock)
        self.refusals: dict[str, float] = {}  # PackageID -> first "not published" (wall clock)
        self.state: AgentState | None = None
        self.http: aiohttp.ClientSession | None = None
        self._id_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.startup_slots = asyncio.Semaphore(settings.startup_concurrency)  # packages starting at once
        self.closing = False
        self.reporter: Reporter | None = None
        self.timetable: Timetable | None = None  # where every tracker client waits for its next announce
        self.prestaged: dict[tuple[str, int], PrestagedRow] = {}  # orders acted on, by (order, version)
        self.staging = asyncio.Lock()  # one round of pre-staging orders at a time
        self.schedule = maintenance.Schedule()  # what the maintenance timer has to visit
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
        self.timetable = Timetable()
        bind = self.settings.engine.bind_host
        connector = aiohttp.TCPConnector(local_addr=(bind, 0) if bind else None, limit=64)
        self.http = aiohttp.ClientSession(connector=connector, headers={"User-Agent": self.settings.engine.client_name})
        self.reporter = Reporter(
            self.http, f"{self.settings.repository_url}/api/report", self.list, refresh=self.settings.report_refresh,
            debounce=min(self.settings.report_debounce, self.settings.report_interval),
            on_answer=lambda answer: prestage.heard(self, answer),
        )  # fmt: skip
        self._leases.load(self.state)
        self.refusals = self.state.refusals()
        self.prestaged = {(row.order_id, row.version): row for row in self.state.prestaged()}
        if self.state.quarantined is not None:
            self._rebuild_rows()
        for row in self.state.packages():
            self._restore(row)
        self.spawn(maintenance.run(self))
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
            vouch = self.state.load_vouch(row.info_hash)
            meta = recheck_stored(data, self.keys, row.package_id, row.version, vouch)
            if meta.info_hash_hex != row.info_hash:
                raise TorrentRefused("its torrent file belongs to another info-hash")
            record = vouch_for(data, meta)
            if vouch != record:  # checked in full now: the next start need not
                with contextlib.suppress(OSError):
                    self.state.save_vouch(row.info_hash, record)
        except TorrentRefused as exc:
            log.error("dropping %s v%d (%s): %s", row.package_id, row.version, row.info_hash, exc)
            self.state.delete_package(row.info_hash)
            self.state.forget_files(row.info_hash)
            return
        package = Package(row, meta, progress=1.0 if row.completed_at else 0.0)
        self.packages[row.info_hash] = package
        self.spawn(running.start(self, package, startup=True))

    async def close(self) -> None:
        """Stop gracefully: ``stopped`` to the tracker, resume data and counters saved."""
        if self.closing:
            return
        self.closing = True
        await stop_tasks(self._tasks, owner="agent")
        if self.reporter is not None:
            # While the packages still run, so the last report says what they are, not "checking".
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await maintenance.report(self)
            await self.reporter.close()
        packages = list(self.packages.values())
        await stop_tasks([task for package in packages for task in package.tasks], owner="agent")
        for package in packages:
            package.tasks = []
        await asyncio.gather(*(p.tracker.close() for p in packages if p.tracker is not None))
        stops = [p.tracker.stop(timeout=3.0) for p in packages if p.tracker is not None and p.torrent is not None]
        if stops:
            await asyncio.gather(*stops, return_exceptions=True)
        self._leases.close()
        if self.timetable is not None:
            self.timetable.close()
        await self.session.close()
        for package in packages:
            flush(self.state, package)
        if self.http is not None:
            await self.http.close()
        if self.state is not None:
            self.state.close()
        log.info("agent stopped")

    @property
    def leases(self) -> dict[str, LeaseRow]:
        """The live leases by id (``leases.Leases``)."""
        return self._leases.rows

    def hold_leased_files(self, package: Package) -> None:
        """After a start-up start: leases of last time hold the package's files again."""
        self._leases.hold_again(package)

    @property
    def pins(self) -> dict[str, Pin]:
        """Lease -> the package's files held open (Windows)."""
        return self._leases.pins

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("agent task failed", exc_info=task.exception())

    def id_lock(self, package_id: str) -> asyncio.Lock:
        lock = self._id_locks.get(package_id)
        if lock is None:
            lock = self._id_locks[package_id] = asyncio.Lock()
        return lock

    def report_soon(self) -> None:
        if self.reporter is not None and not self.closing:
            self.reporter.soon()

    # ------------------------------------------------------------------------ requests

    async def ensure(self, package_id: str, version: int | None = None, *, advertised_at: float | None = None) -> PackageStatus:
        """Make sure the package (latest version unless given) is cached or downloading;
        ``advertised_at`` (a pre-staging order's time) instead of now as its advertisement."""
        return await fetching.ensure(self, package_id, version, advertised_at=advertised_at)

    async def prestage(self, orders: list[StageOrder], cancelled: list[str], tag: str | None = None) -> None:
        """Act on pre-staging orders (each once) and on cancellations; one round at a time.
        Once every order is acted on, ``tag`` spares the next check-ins the same lists; an order
        that could not be fetched keeps it unset, so the next check-in brings it again."""
        await prestage.prestage(self, orders, cancelled, tag)

    async def remove(self, package_id: str) -> None:
        """Remove every cached version of a package; Conflict if one is in use."""
        await retention.remove(self, package_id)

    async def cleanup(self, now: float | None = None) -> list[Removal]:
        """Apply the retention policy once; returns what was removed."""
        return await retention.cleanup(self, now)

    async def verify(self, package_id: str) -> PackageStatus:
        """Check the package before a run; the answer comes within ``verify_answer`` seconds.

        The check re-hashes every piece from the files at their paths and passes only if their
        identity (size, mtime, change time, inode) did not move while it ran; it is not repeated
        while the files keep that identity. A longer check goes on after the answer, which then
        says ``checking`` with the check's progress; the next call joins it. A damaged package
        goes back to downloading to be repaired.
        """
        return await verify.verify(self, package_id)

    # ------------------------------------------------------------------------ leases

    def acquire(self, package_id: str, pid: int, version: int | None = None) -> str:
        """Protect the package from removal while process ``pid`` runs; Conflict unless complete."""
        package_id = parse_package_id(package_id)
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise BadRequest("pid must be a positive integer")
        package = find_package(self.packages, package_id, version) if version is not None else selected_package(self.packages, package_id)
        if package is None:
            raise UnknownPackage(f"{package_id} v{version} is not in the cache")
        return self._leases.acquire(package, pid)

    def release(self, lease: str) -> None:
        self._leases.release(lease)

    def in_use(self) -> set[str]:
        """Info-hashes with a live lease; void leases (process gone) are dropped on the way."""
        return self._leases.in_use()

    # ------------------------------------------------------------------------ status

    def status(self, package_id: str) -> PackageStatus:
        package_id = parse_package_id(package_id)
        package = current_package(self.packages, package_id)
        fetch = self.fetches.get(package_id)
        if fetch is not None and (package is None or fetch.at >= package.row.last_advertised):
            return self.fetch_status(fetch)
        if package is None:
            raise UnknownPackage(f"{package_id} is not in the cache")
        return self.status_of(package)

    def list(self) -> list[PackageStatus]:
        in_use = self.in_use()
        found = [self.status_of(p, in_use) for p in self.packages.values()]
        found += [self.fetch_status(f) for f in self.fetches.values()]
        return sorted(found, key=lambda s: (s.package_id, s.version if s.version is not None else -1))

    def status_of(self, package: Package, in_use: set[str] | None = None) -> PackageStatus:
        return package_status(
            package, path=self.package_path(package), in_use=package.key in (self.in_use() if in_use is None else in_use),
            unpublished_since=self.refusals.get(package.row.package_id), min_seed=self.limits.min_seed,
            retry_interval=self.settings.retry_interval,
        )  # fmt: skip

    def fetch_status(self, fetch: Fetch) -> PackageStatus:
        return fetch_status(fetch, unpublished_since=self.refusals.get(fetch.package_id), min_seed=self.limits.min_seed)

    def package_path(self, package: Package) -> Path:
        return self.settings.cache_dir / package.key / package.meta.info.name
