"""A package's ``PackageStatus`` as the control API, the reports and the metrics see it.

Every problem has one ``outcomes.Problem`` kind beside its one line: a package's own error
(disk full, a refused torrent) first, else what keeps a download from completing (the web
seed, the tracker), so ``downloading 0.0%`` never hides why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from p2pdist.agent.errors import UnknownPackage
from p2pdist.agent.packages import COMPLETE, ERROR, Fetch, Package, iso
from p2pdist.control.schema import PackageStatus
from p2pdist.errors import one_line
from p2pdist.outcomes import Problem, most_blocking

if TYPE_CHECKING:
    from p2pdist.agent.daemon import Agent


def status(agent: Agent, package_id: str) -> PackageStatus:
    package_id = agent._package_id(package_id)
    package = agent._current(package_id)
    fetch = agent.fetches.get(package_id)
    if fetch is not None and (package is None or fetch.at >= package.row.last_advertised):
        return agent._fetch_status(fetch)
    if package is None:
        raise UnknownPackage(f"{package_id} is not in the cache")
    return agent.status_of(package)


def list_all(agent: Agent) -> list[PackageStatus]:
    in_use = agent.in_use()
    statuses = [agent.status_of(p, in_use) for p in agent.packages.values()]
    statuses += [agent._fetch_status(f) for f in agent.fetches.values()]
    return sorted(statuses, key=lambda s: (s.package_id, s.version if s.version is not None else -1))


def status_of(agent: Agent, package: Package, in_use: set[str] | None = None) -> PackageStatus:
    row, torrent = package.row, package.torrent
    state = package.state
    if torrent is not None:
        package.progress = torrent.progress
    problem = agent._problem(package, state)
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
        path=str(agent.package_path(package)) if state == COMPLETE else None,
        error=error,
        error_kind=None if kind is None else kind.value,
        tracker_error=one_line(package.tracker.status.last_error) if package.tracker and package.tracker.status.last_error else None,
        in_use=package.key in (agent.in_use() if in_use is None else in_use),
        unpublished_since=iso(agent.refusals.get(row.package_id)) if kind is Problem.NOT_PUBLISHED else None,
        last_advertised=iso(row.last_advertised) or "",
        completed_at=iso(row.completed_at) if state == COMPLETE else None,
        seed_until=iso(row.last_advertised + agent.limits.min_seed) or "",
    )


def problem(agent: Agent, package: Package, state: str) -> tuple[Problem, str] | None:
    """The package's own error; else, while it is not complete, the most blocking problem
    of its sources (web seeds, tracker)."""
    if state == ERROR and package.error:
        error = package.error
        if package.retry_at is not None:
            error = f"{error} (retrying every {agent.settings.retry_interval:g} s)"
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


def fetch_status(agent: Agent, fetch: Fetch) -> PackageStatus:
    return PackageStatus(
        package_id=fetch.package_id,
        version=fetch.version,
        name=fetch.package_id,
        state=fetch.state,
        error=fetch.error,
        error_kind=None if fetch.kind is None else fetch.kind.value,
        unpublished_since=iso(agent.refusals.get(fetch.package_id)) if fetch.kind is Problem.NOT_PUBLISHED else None,
        last_advertised=iso(fetch.at) or "",
        seed_until=iso(fetch.at + agent.limits.min_seed) or "",
    )
