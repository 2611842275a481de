"""A package's ``PackageStatus`` as the control API, the reports and the metrics see it.

Every problem has one ``outcomes.Problem`` kind beside its one line: a package's own error
(disk full, a refused torrent) first, else what keeps a download from completing (the web
seed, the tracker), so ``downloading 0.0%`` never hides why. What it needs of the agent comes as
arguments, so rendering depends on nothing else.
"""

from __future__ import annotations

from pathlib import Path

from p2pdist.agent.packages import COMPLETE, ERROR, Fetch, Package, iso
from p2pdist.control.schema import PackageStatus
from p2pdist.errors import one_line
from p2pdist.outcomes import Problem, most_blocking


def package_status(
    package: Package, *, path: Path, in_use: bool, unpublished_since: float | None, min_seed: float, retry_interval: float
) -> PackageStatus:
    """``path`` where it is when complete; ``unpublished_since`` the first refusal of its
    PackageID, if any; ``min_seed`` and ``retry_interval`` the agent's settings."""
    row, torrent = package.row, package.torrent
    state = package.state
    if torrent is not None:
        package.progress = torrent.progress
    problem = package_problem(package, state, retry_interval)
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
        path=str(path) if state == COMPLETE else None,
        error=error,
        error_kind=None if kind is None else kind.value,
        tracker_error=one_line(package.tracker.status.last_error) if package.tracker and package.tracker.status.last_error else None,
        in_use=in_use,
        unpublished_since=iso(unpublished_since) if kind is Problem.NOT_PUBLISHED else None,
        last_advertised=iso(row.last_advertised) or "",
        completed_at=iso(row.completed_at) if state == COMPLETE else None,
        seed_until=iso(row.last_advertised + min_seed) or "",
    )


def package_problem(package: Package, state: str, retry_interval: float) -> tuple[Problem, str] | None:
    """The package's own error; else, while it is not complete, the most blocking problem
    of its sources (web seeds, tracker)."""
    if state == ERROR and package.error:
        error = package.error
        if package.retry_at is not None:
            error = f"{error} (retrying every {retry_interval:g} s)"
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


def fetch_status(fetch: Fetch, *, unpublished_since: float | None, min_seed: float) -> PackageStatus:
    """An ensure whose torrent is being fetched, or was refused, as a status."""
    return PackageStatus(
        package_id=fetch.package_id,
        version=fetch.version,
        name=fetch.package_id,
        state=fetch.state,
        error=fetch.error,
        error_kind=None if fetch.kind is None else fetch.kind.value,
        unpublished_since=iso(unpublished_since) if fetch.kind is Problem.NOT_PUBLISHED else None,
        last_advertised=iso(fetch.at) or "",
        seed_until=iso(fetch.at + min_seed) or "",
    )
