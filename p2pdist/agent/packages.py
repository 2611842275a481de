"""What the agent holds per package: a cached version (``Package``) or an ensure in flight (``Fetch``).

A ``Package`` is one torrent, i.e. one (PackageID, version): its SQLite row, its checked
torrent and, while it runs, its engine parts (torrent, tracker client, web seeds). Its state
is derived from the engine's, so it never disagrees with what runs. Here too: which cached
version a request means, and writing a package's row back to SQLite (``flush``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

from p2pdist.agent.errors import BadRequest, UnknownPackage
from p2pdist.agent.state import AgentState, PackageRow
from p2pdist.engine.torrent import Torrent, TorrentState
from p2pdist.engine.tracker_client import TrackerClient
from p2pdist.metainfo import Metainfo, normalize_package_id
from p2pdist.outcomes import Problem, State

TYPE_CHECKING = False
if TYPE_CHECKING:
    from p2pdist.engine.webseed import WebSeed  # imported by the first download with a web seed

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


@dataclass(slots=True)  # a thousand in an idle agent: no per-instance dict
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


def parse_package_id(text: str) -> str:
    """A request's PackageID, normalized; BadRequest if it is not one."""
    try:
        return normalize_package_id(text)
    except (ValueError, AttributeError) as exc:
        raise BadRequest(str(exc)) from None


def find_package(packages: dict[str, Package], package_id: str, version: int | None) -> Package | None:
    """A cached version of ``package_id``: that version, or the newest when None."""
    versions = [p for p in packages.values() if p.row.package_id == package_id and not p.removed]
    if version is not None:
        versions = [p for p in versions if p.row.version == version]
    return max(versions, key=lambda p: (p.row.version, p.row.last_advertised), default=None)


def current_package(packages: dict[str, Package], package_id: str) -> Package | None:
    """The version most recently asked for (what status and leases refer to)."""
    versions = [p for p in packages.values() if p.row.package_id == package_id and not p.removed]
    return max(versions, key=lambda p: (p.row.last_advertised, p.row.version), default=None)


def selected_package(packages: dict[str, Package], package_id: str) -> Package:
    package = current_package(packages, package_id)
    if package is None:
        raise UnknownPackage(f"{package_id} is not in the cache")
    return package


def flush(state: AgentState | None, package: Package) -> None:
    """Write the package's row (state, counters, times) to SQLite."""
    if state is None or package.removed:
        return
    row = package.row
    if package.torrent is None or package.torrent.state is not TorrentState.STOPPED:
        row.state, row.error = package.state, package.error  # a stopped engine says nothing new
    live = package.totals()
    values = (row.state, row.error, *live, row.last_advertised, row.completed_at)
    if values == package.flushed:
        return  # nothing new: no write
    try:
        state.update_package(
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
