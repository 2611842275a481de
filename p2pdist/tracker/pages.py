"""What the status page shows: the console's JSON views, shaped for the templates.

The page reads the same figures as ``/api/...`` (``console``), so a number on the page is the
number a script gets. This module only adds what people need and scripts do not: each
version's status among its siblings (current, superseded, retired, not published), the
segments of a readiness bar, the bars of a 28-day chart, and readable sizes and times. It is
pure (no I/O, no template engine): ``templating`` renders its output, escaping every value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from p2pdist.outcomes import FIXES, problem_kind
from p2pdist.tracker.console import Console, Prestaged, package_sites
from p2pdist.tracker.repository import PackageRecord

CURRENT, SUPERSEDED, RETIRED, NOT_PUBLISHED = "current", "superseded", "retired", "not-published"
STATUS_TEXT = {CURRENT: "current", SUPERSEDED: "superseded", RETIRED: "retired", NOT_PUBLISHED: "not published"}


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def percent(ratio: float | None) -> str:
    """A savings ratio as people read it; a dash before any byte moved."""
    return "–" if ratio is None else f"{100 * ratio:.0f}%"


def utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def day(iso: str | None) -> str:
    """``2026-03-02T08:00:00Z`` -> ``2026-03-02`` (the console's times are ISO 8601, UTC)."""
    return iso[:10] if iso else "–"


def when(iso: str | None) -> str:
    return f"{iso[:10]} {iso[11:16]}" if iso else "–"


def fix_for(kind: str) -> str:
    """What an admin can do about a problem kind (``outcomes.FIXES``)."""
    return FIXES[problem_kind(kind)]


@dataclass(frozen=True)
class Readiness:
    """A readiness bar: of ``agents`` PCs, ``complete``, on their way, and held up by a problem.

    A PC counted under a problem kind is never complete (``console``), so the three parts
    add up to ``agents``."""

    agents: int
    complete: int
    problems: int

    @property
    def on_the_way(self) -> int:
        return self.agents - self.complete - self.problems

    @property
    def label(self) -> str:
        return f"{self.complete} of {self.agents}"

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Readiness:
        agents, complete = row["agents"], row["complete"]
        problems = min(sum(row["errors"].values()), agents - complete)
        return cls(agents, complete, max(problems, 0))


def statuses(versions: Iterable[tuple[int | None, str]]) -> dict[int | None, str]:
    """Each version's status from the console's (version, published/retired/not-published).

    A published version is superseded when a newer published version of the same PackageID
    exists, so exactly one (the newest published) is current."""
    given = list(versions)
    published = [v for v, status in given if status == "published" and v is not None]
    newest = max(published, default=None)
    result: dict[int | None, str] = {}
    for version, status in given:
        if status == "retired":
            result[version] = RETIRED
        elif status == "published":
            result[version] = CURRENT if version == newest else SUPERSEDED
        else:
            result[version] = NOT_PUBLISHED
    return result


def _version_row(view: dict[str, Any], status: str) -> dict[str, Any]:
    totals = view["totals"]
    return {**view, "status": status, "status_text": STATUS_TEXT[status], "readiness": Readiness.of(totals), "totals": totals}


def package_page(
    console: Console, package: str, records: list[PackageRecord], configured: list[str], prestaged: Prestaged | None = None
) -> dict[str, Any] | None:
    """``/package/<id>``: the package's versions (newest first) with their status, each with
    one row per site (pre-staged sites marked); None if nothing is known of it."""
    view = package_sites(console, package, records, configured, prestaged)
    if view is None:
        return None
    status = statuses((v["version"], v["status"]) for v in view["versions"])
    versions = []
    for item in view["versions"]:
        row = _version_row(item, status[item["version"]])
        # The current version has a row for every site (a site with no report is news); an
        # older one only where PCs still hold it, and none at all when nobody does.
        row["sites"] = [
            {**site, "readiness": Readiness.of(site)}
            for site in item["sites"]
            if row["status"] == CURRENT or site["agents"] or site["prestaged_since"] or site["bytes"]["from_peers"] or site["bytes"]["from_webseed"]
        ]
        row["active"] = bool(row["sites"])
        versions.append(row)
    name = view["name"] or next((v["name"] for v in view["versions"] if v["name"]), None)
    return {"package": package, "name": name, "current_version": view["current_version"], "versions": versions}


def index_page(console: Console, records: list[PackageRecord], configured: list[str], sites: dict[str, Any]) -> dict[str, Any]:
    """``/``: every package (PackageID order) with its versions, and every site.

    Packages come from the catalogue (retired ones too) and from what PCs reported (a package
    they asked for that was never published)."""
    ids = sorted({r.package_id for r in records} | {p for (p, _, _) in console.rows})
    packages = [page for page in (package_page(console, p, records, configured) for p in ids) if page is not None]
    site_rows = [{**row, "readiness": Readiness.of(row)} for row in sites["sites"]]
    return {"packages": packages, "sites": site_rows, "totals": sites["totals"], "total_readiness": Readiness.of(sites["totals"])}


def site_page(view: dict[str, Any], records: list[PackageRecord]) -> dict[str, Any]:
    """``/site/<site>``: the console's site view with each package version's status and the
    28-day chart's bars (heights in percent of the busiest day)."""
    siblings: dict[str, list[tuple[int | None, str]]] = {}
    for record in records:
        siblings.setdefault(record.package_id, []).append((record.version, "retired" if record.retired else "published"))
    packages = []
    for row in view["packages"]:
        known = statuses(siblings.get(row["package"], []) + [(row["version"], row["status"])])
        status = known[row["version"]]
        packages.append({**row, "status": status, "status_text": STATUS_TEXT[status], "readiness": Readiness.of(row)})
    busiest = max((d["from_peers"] + d["from_webseed"] for d in view["history"]), default=0)
    history = [
        {**d, "peers_height": _height(d["from_peers"], busiest), "webseed_height": _height(d["from_webseed"], busiest)}
        for d in view["history"]
    ]
    kinds = sorted({row["error_kind"] for row in view["stuck"] if row["error_kind"]})
    return {**view, "packages": packages, "history": history, "busiest": busiest,
            "fixes": [(kind, fix_for(kind)) for kind in kinds]}  # fmt: skip


def _height(amount: int, busiest: int) -> float:
    return round(100 * amount / busiest, 1) if busiest else 0.0
