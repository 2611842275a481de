"""The server's one HTML page: what is published and how much WAN the peers saved, per site.

Every value that came from a torrent or a report (names, site names) goes through
``html.escape``; the page is one self-contained string with inline CSS, so there are no static
files to serve (and none that could follow a symlink).
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass

from p2pdist.tracker.repository import PackageRecord
from p2pdist.tracker.store import SiteCounts

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; }
th { background: #eef; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.package td { border-top: 2px solid #888; }
.muted { color: #888; }
"""

COLUMNS = (
    "Name", "PackageID", "Version", "Size", "Published",
    "Site", "Seeders", "Leechers", "Completed", "From peers", "From web seed", "WAN saved",
)  # fmt: skip


@dataclass(frozen=True)
class Totals:
    """What a site's PCs reported for a package (the console's ledger)."""

    from_peers: int = 0
    from_webseed: int = 0
    uploaded: int = 0
    completed: int = 0
    reporters: int = 0


@dataclass(frozen=True)
class SiteRow:
    site: str
    counts: SiteCounts
    totals: Totals


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp))


def saved(totals: Totals) -> str:
    moved = totals.from_peers + totals.from_webseed
    return f"{100 * totals.from_peers / moved:.0f}%" if moved else "-"


def _cell(text: object, numeric: bool = False, name: str = "", rowspan: int = 1) -> str:
    span = f' rowspan="{rowspan}"' if rowspan > 1 else ""
    classes = ' class="num"' if numeric else ""
    data = f' data-col="{name}"' if name else ""
    return f"<td{span}{classes}{data}>{html.escape(str(text))}</td>"


def render_index(packages: list[tuple[PackageRecord, list[SiteRow]]], now: float) -> str:
    """The whole page; ``packages`` are the published ones with their per-site figures."""
    rows = []
    for record, sites in packages:
        span = max(len(sites), 1)
        head = "".join(
            _cell(value, numeric, name, span)
            for name, value, numeric in (
                ("name", record.name, False),
                ("package", record.package_id, False),
                ("version", record.version, True),
                ("size", human_size(record.total_length), True),
                ("published", utc(record.published_at), False),
            )
        )
        attrs = f'data-package="{html.escape(record.package_id)}" data-version="{record.version}"'
        if not sites:
            rows.append(f'<tr class="package" {attrs}>{head}<td colspan="7" class="muted">no activity yet</td></tr>')
            continue
        for index, row in enumerate(sites):
            cells = "".join(
                (
                    _cell(row.site or "(no site)", name="site"),
                    _cell(row.counts.seeders, True, "seeders"),
                    _cell(row.counts.leechers, True, "leechers"),
                    _cell(row.counts.completed, True, "completed"),
                    _cell(human_size(row.totals.from_peers), True, "from_peers"),
                    _cell(human_size(row.totals.from_webseed), True, "from_webseed"),
                    _cell(saved(row.totals), True, "saved"),
                )
            )
            klass = ' class="package"' if index == 0 else ""
            site_attr = f'data-site="{html.escape(row.site)}"'
            rows.append(f"<tr{klass} {attrs} {site_attr}>{head if index == 0 else ''}{cells}</tr>")
    header = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "\n".join(rows) or f'<tr><td colspan="{len(COLUMNS)}" class="muted">no packages published</td></tr>'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>p2pdist site server</title>
<style>{STYLE}</style></head>
<body><h1>p2pdist site server</h1>
<p id="summary">{len(packages)} package version(s) published; page generated {html.escape(utc(now))}.</p>
<table id="packages"><thead><tr>{header}</tr></thead>
<tbody>
{body}
</tbody></table>
<p class="muted">Seeders and leechers are live tracker figures; bytes come from agents' reports.
WAN saved = bytes from peers / all bytes downloaded.</p>
</body></html>
"""
