"""The console's views: per package x site readiness, problems and savings, as plain data.

Pure functions from what the server already holds (the catalogue's records, the ledger's
counters and daily bytes, the tracker's live seeders) to the JSON of ``/api/packages/<id>/sites``,
``/api/sites`` and ``/api/sites/<site>`` (docs/site-server.md); ``/metrics`` and the page read
the same ``Figures``. Nothing here does I/O, so every number is tested without a server.

Counts at a site are PCs x package versions: "complete 12, agents 40" for a package reads "12
of the 40 PCs that reported it have it". Summed over packages (a site's totals) they count each
PC once per package. Savings are the share of the bytes the PCs downloaded that came from
their peers instead of the distribution point over the WAN, as BranchCache and Delivery
Optimization count them: ``from_peers / (from_peers + from_webseed)``.

Pre-staging (``prestage``) shows as ``prestaged_since`` on each site row of a package version
(when the standing order for that site took effect, null when there is none) and as the list
``prestaged`` of a version and of a site.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from p2pdist.outcomes import State
from p2pdist.tracker.ledger import DAY, AgentRow, DayBytes, Tally, TallyKey
from p2pdist.tracker.reports import UNVERSIONED
from p2pdist.tracker.repository import PackageRecord
from p2pdist.tracker.store import SiteCounts

WINDOWS = (7, 28)
Prestaged = Mapping[tuple[str, int], Mapping[str, float]]  # (package, version) -> site -> since
Bytes = tuple[int, int, int]  # from peers, from the web seed, uploaded


def savings(from_peers: int, from_webseed: int) -> float | None:
    moved = from_peers + from_webseed
    return round(from_peers / moved, 4) if moved else None


def _bytes(peers: int, webseed: int, uploaded: int) -> dict[str, Any]:
    return {"from_peers": peers, "from_webseed": webseed, "uploaded": uploaded, "savings": savings(peers, webseed)}


@dataclass
class Figures:
    """One row of the console: a (package version, site), or a sum of them."""

    tally: Tally = field(default_factory=Tally)
    seeders: int = 0
    leechers: int = 0
    windows: dict[int, list[int]] = field(default_factory=lambda: {days: [0, 0, 0] for days in WINDOWS})

    def add(self, other: Figures) -> None:
        self.tally.add(other.tally)
        self.seeders += other.seeders
        self.leechers += other.leechers
        for days, amounts in other.windows.items():
            for i, amount in enumerate(amounts):
                self.windows[days][i] += amount

    def to_json(self) -> dict[str, Any]:
        tally = self.tally
        return {
            "agents": tally.agents,
            "complete": tally.state(State.COMPLETE),
            "downloading": tally.state(State.DOWNLOADING),
            "checking": tally.state(State.CHECKING),
            "fetching": tally.state(State.FETCHING),
            "error": tally.state(State.ERROR),
            "errors": tally.errors,  # PCs not complete, by problem kind (whatever their state)
            "in_use": tally.in_use,
            "seeding": self.seeders,  # live, from the tracker
            "leeching": self.leechers,
            "bytes": _bytes(tally.from_peers, tally.from_webseed, tally.uploaded),
            **{f"last_{days}_days": _bytes(*self.windows[days]) for days in WINDOWS},
        }


def version_of(stored: int) -> int | None:
    return None if stored == UNVERSIONED else stored


def iso_day(day: int) -> str:
    return datetime.fromtimestamp(day * DAY, timezone.utc).strftime("%Y-%m-%d")


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Console:
    """The figures of one moment, indexed by (package, version, site)."""

    def __init__(
        self,
        tallies: Mapping[TallyKey, Tally],
        history: Iterable[DayBytes],
        live: Mapping[tuple[str, int], Mapping[str, SiteCounts]],
        today: int,
    ) -> None:
        self.rows: dict[TallyKey, Figures] = {key: Figures(tally) for key, tally in tallies.items()}
        for (package, version), per_site in live.items():
            for site, counts in per_site.items():
                figures = self.rows.setdefault((package, version, site), Figures())
                figures.seeders, figures.leechers = counts.seeders, counts.leechers
        for row in history:
            for days in WINDOWS:
                if row.day > today - days:
                    figures = self.rows.setdefault((row.package_id, row.version, row.site), Figures())
                    amounts = figures.windows[days]
                    amounts[0] += row.from_peers
                    amounts[1] += row.from_webseed
                    amounts[2] += row.uploaded

    def sites_of(self, package: str, version: int) -> dict[str, Figures]:
        return {site: f for (p, v, site), f in self.rows.items() if (p, v) == (package, version)}

    def versions_of(self, package: str) -> set[int]:
        return {v for (p, v, _) in self.rows if p == package}

    def at_site(self, site: str) -> dict[tuple[str, int], Figures]:
        return {(p, v): f for (p, v, s), f in self.rows.items() if s == site}

    def sites(self) -> set[str]:
        return {site for (_, _, site) in self.rows}


def _total(figures: Iterable[Figures]) -> Figures:
    total = Figures()
    for item in figures:
        total.add(item)
    return total


def _record_json(record: PackageRecord | None, package: str, version: int) -> dict[str, Any]:
    if record is None:
        return {"package": package, "version": version_of(version), "status": "not-published", "name": None,
                "size": None, "info_hash": None, "published_at": None, "retired_at": None}  # fmt: skip
    return {
        "package": record.package_id,
        "version": record.version,
        "status": "retired" if record.retired else "published",
        "name": record.name,
        "size": record.total_length,
        "info_hash": record.info_hash,
        "published_at": iso(record.published_at),
        "retired_at": iso(record.retired_at),
    }


def package_sites(
    console: Console, package: str, records: list[PackageRecord], configured: list[str], prestaged: Prestaged | None = None
) -> dict[str, Any] | None:
    """``GET /api/packages/<PackageID>/sites``: every version (newest first), one row per site
    (each configured site, and any other site that reported); None if nothing is known."""
    prestaged = prestaged or {}
    by_version = {r.version: r for r in records if r.package_id == package}
    versions = sorted(set(by_version) | console.versions_of(package), reverse=True)
    if not versions:
        return None
    result = []
    for version in versions:
        per_site = console.sites_of(package, version)
        orders = prestaged.get((package, version), {})
        names = sorted(set(per_site) | set(configured) | set(orders))
        rows = [{"site": name, **per_site.get(name, Figures()).to_json(), "prestaged_since": iso(orders.get(name))} for name in names]
        result.append({**_record_json(by_version.get(version), package, version),
                       "totals": _total(per_site.values()).to_json(), "sites": rows,
                       "prestaged": [{"site": name, "since": iso(since)} for name, since in sorted(orders.items())]})  # fmt: skip
    current = next((r for r in sorted(by_version.values(), key=lambda r: -r.version) if not r.retired), None)
    return {"package": package, "name": current.name if current else None,
            "current_version": current.version if current else None, "versions": result}  # fmt: skip


def site_list(console: Console, configured: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """``GET /api/sites``: each site's figures summed over package versions, then all of them."""
    names = sorted(console.sites() | set(configured))
    rows = []
    everything = Figures()
    for name in names:
        per_package = console.at_site(name)
        total = _total(per_package.values())
        everything.add(total)
        rows.append({"site": name, **configured.get(name, {"configured": False}),
                     "packages": sum(1 for f in per_package.values() if f.tally.agents), **total.to_json()})  # fmt: skip
    return {"sites": rows, "totals": everything.to_json()}


def site_view(
    console: Console,
    site: str,
    config: dict[str, Any] | None,
    records: list[PackageRecord],
    stuck: list[AgentRow],
    history: Iterable[DayBytes],
    today: int,
    prestaged: Prestaged | None = None,
) -> dict[str, Any] | None:
    """``GET /api/sites/<site>``: one row per package version (those pre-staged here too), the
    stuck PCs, 28 days of bytes."""
    per_package = console.at_site(site)
    if config is None and not per_package:
        return None
    here = {key: sites[site] for key, sites in (prestaged or {}).items() if site in sites}
    for key in here:
        per_package.setdefault(key, Figures())
    by_key = {(r.package_id, r.version): r for r in records}
    packages = [
        {**_record_json(by_key.get(key), *key), **figures.to_json(), "prestaged_since": iso(here.get(key))}
        for key, figures in sorted(per_package.items(), key=lambda item: (item[0][0], -item[0][1]))
    ]
    days: dict[int, list[int]] = {day: [0, 0, 0] for day in range(today - 27, today + 1)}
    for row in history:
        if row.site == site and row.day in days:
            amounts = days[row.day]
            amounts[0] += row.from_peers
            amounts[1] += row.from_webseed
            amounts[2] += row.uploaded
    return {
        "site": site,
        **(config or {"configured": False}),
        "totals": _total(per_package.values()).to_json(),
        "packages": packages,
        "stuck": [
            {"address": r.address, "package": r.package_id, "version": version_of(r.version), "state": r.state,
             "error_kind": r.kind, "error": r.error, "progress": r.progress, "reported_at": iso(r.updated_at)}
            for r in stuck
        ],  # fmt: skip
        "history": [{"day": iso_day(day), **_bytes(*amounts)} for day, amounts in days.items()],
        "prestaged": [{"package": p, "version": v, "since": iso(since)} for (p, v), since in sorted(here.items())],
    }
