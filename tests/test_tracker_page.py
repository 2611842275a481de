"""The status page: its views on a real server fed by real reports, escaping of hostile values,
and headless Chromium at a phone's and a desktop's width, with screenshots.

Set ``P2PDIST_PAGE_SHOTS=/some/folder`` to also write the Chromium screenshots there (to look
at them); they always go to the test's own temporary folder.
"""

from __future__ import annotations

import os
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest

from p2pdist.metainfo import encode_torrent, parse_metainfo
from p2pdist.metainfo.signing import sign_torrent
from p2pdist.tracker import templating
from p2pdist.tracker.console import Console, site_list, site_view
from p2pdist.tracker.ledger import DAY, AgentRow, DayBytes, Tally
from p2pdist.tracker.pages import CURRENT, NOT_PUBLISHED, RETIRED, SUPERSEDED, Readiness, human_size, index_page, package_page, site_page, statuses
from p2pdist.tracker.repository import PackageRecord
from p2pdist.tracker.settings import LocationSettings, PageSettings, ReportSettings, SiteSettings
from p2pdist.tracker.web import STATE
from tests.support.siteserver import KEY, TOKEN, info_dict, make_settings, publish, running, session_from

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
HOSTILE = """<script>alert("x")</script> 'quoted' & "double\""""
SITES = (
    SiteSettings("HQ", ("127.0.0.0/16",), (LocationSettings("HQ-floor-1", ("127.0.1.0/24",)),)),
    SiteSettings("Lyon", ("127.1.0.0/16",)),
    SiteSettings("Nantes", ("127.2.0.0/16",)),
)
RANGE_LINE = "http://dp-lyon/SMSPKG/PS100012/office-2024/setup.exe: the web server ignores range requests (answered 200, not 206)"


# ------------------------------------------------------------------------------ HTML reading


class Rows(HTMLParser):
    """Every element with a data-col inside a row, by row: the row's data-* attributes and each
    cell's text; also every tag seen and every attribute value, to check what markup exists."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[dict[str, object]] = []
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []
        self.text: list[str] = []
        self._cell: str | None = None
        self._depth = 0
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = {k: v or "" for k, v in attrs}
        self.attributes.extend((tag, k, v) for k, v in values.items())
        if tag == "tr":
            self.rows.append({k[5:]: v for k, v in values.items() if k.startswith("data-")} | {"cells": {}})
        elif tag == "td" and "data-col" in values and self.rows:
            self._cell, self._depth = values["data-col"], 0
            self.rows[-1]["cells"][self._cell] = ""  # type: ignore[index]
        elif self._cell is not None:
            self._depth += 1

    def handle_endtag(self, tag: str) -> None:
        if self._cell is not None:
            if tag == "td" and self._depth == 0:
                self._cell = None
            elif tag != "td":
                self._depth -= 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            cells = self.rows[-1]["cells"]
            cells[self._cell] = " ".join((cells[self._cell] + " " + data).split())  # type: ignore[index]

    def find(self, **match: str) -> dict[str, str]:
        """The cells of the one row whose data-* attributes are ``match``."""
        found = [r for r in self.rows if all(r.get(k) == v for k, v in match.items())]
        assert len(found) == 1, (match, [(r.get("package"), r.get("site"), r.get("version")) for r in self.rows])
        return found[0]["cells"]  # type: ignore[return-value]


# -------------------------------------------------------------------------------- pure parts


def test_human_size() -> None:
    assert [human_size(n) for n in (0, 1023, 1024, 40_000, 5 * 2**30)] == ["0 B", "1023 B", "1.0 KiB", "39.1 KiB", "5.0 GiB"]


def test_version_statuses() -> None:
    given = [(4, "retired"), (3, "published"), (2, "published"), (1, "retired"), (None, "not-published")]
    assert statuses(given) == {4: RETIRED, 3: CURRENT, 2: SUPERSEDED, 1: RETIRED, None: NOT_PUBLISHED}
    assert statuses([(2, "retired"), (1, "retired")]) == {2: RETIRED, 1: RETIRED}  # none current


def test_readiness_parts_add_up() -> None:
    r = Readiness.of({"agents": 40, "complete": 12, "errors": {"range-unsupported": 8, "disk-full": 1}})
    assert (r.label, r.complete, r.on_the_way, r.problems) == ("12 of 40", 12, 19, 9)
    assert Readiness.of({"agents": 0, "complete": 0, "errors": {}}).label == "0 of 0"


def hostile_views(now: float) -> dict[str, tuple[str, dict[str, object]]]:
    """Each template's context, built by the real view functions from a console that holds
    hostile values everywhere a torrent or a report can put text."""
    today = int(now // DAY)
    tally = Tally(from_peers=3000, from_webseed=1000)
    tally.labels.update({"seen": 2, "state:complete": 1, "state:error": 1, f"kind:{HOSTILE}": 1})
    console = Console({("PS100012", 3, HOSTILE): tally}, [DayBytes(today, "PS100012", 3, HOSTILE, 3000, 1000, 0)], {}, today)
    records = [PackageRecord("ab" * 20, "PS100012", 3, HOSTILE, 40_000, 1, now)]
    stuck = [AgentRow("127.1.0.5", "PS100012", 3, HOSTILE, "error", HOSTILE, HOSTILE, 0.25, now)]
    site = site_view(console, HOSTILE, None, records, stuck, console_history(console, today), today)
    assert site is not None
    common = {"refresh": 60, "generated": "now"}
    return {
        "index": ("index.html", {**common, **index_page(console, records, [], site_list(console, {}))}),
        "package": ("package.html", {**common, **package_page(console, "PS100012", records, [])}),  # type: ignore[dict-item]
        "site": ("site.html", {**common, **site_page(site, records)}),
    }


def console_history(console: Console, today: int) -> list[DayBytes]:
    return [DayBytes(today, p, v, s, f.windows[28][0], f.windows[28][1], 0) for (p, v, s), f in console.rows.items()]


@pytest.mark.parametrize("view", ["index", "package", "site"])
def test_templates_escape_hostile_values(view: str) -> None:
    template, context = hostile_views(time.time())[view]
    html = templating.environment().get_template(template).render(context)
    assert "<script>" not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &#39;quoted&#39; &amp;" in html
    page = Rows(html)
    assert "script" not in page.tags  # the page has no script at all, and no value became one
    texts = " ".join(page.text)
    assert HOSTILE in texts  # shown, as text
    # Attribute values come back whole: no quote in a value closed its attribute.
    assert all(HOSTILE == value or '"' not in value for _, _, value in page.attributes)
    if view == "site":
        assert page.find(address="127.1.0.5")["problem"] == f"{HOSTILE} {HOSTILE}"
    else:
        assert ("tr", "data-site", HOSTILE) in page.attributes
    if view == "index":
        assert ("a", "href", "/site/" + quote(HOSTILE, safe="")) in page.attributes
        assert page.find(package="PS100012", version="3")["name"].startswith(HOSTILE)


def test_the_stylesheet_is_inlined_and_no_static_file_is_needed() -> None:
    template, context = hostile_views(time.time())["index"]
    html = templating.environment().get_template(template).render(context)
    assert "@media (max-width: 760px)" in html and '<meta http-equiv="refresh" content="60">' in html
    assert "<link" not in html


# ----------------------------------------------------------------------- a real server, fed


def torrent(package: str, version: int, name: str, size: int) -> tuple[bytes, str]:
    raw_info, _ = info_dict(name, package, version, size=size)
    unsigned = encode_torrent(raw_info, trackers=(("http://127.0.0.1/announce",),), creation_date=1_700_000_000)
    signed = sign_torrent(parse_metainfo(unsigned), KEY)
    return signed, parse_metainfo(signed).info_hash.hex()


async def report(server, source: str, *entries: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    async with session_from(source) as client:
        async with client.post(server.url + "/api/report", json={"packages": list(entries)}) as reply:
            answer = await reply.json()
            assert reply.status == 200 and answer["refused"] == [], answer


async def retire(server, package: str, version: int) -> None:  # type: ignore[no-untyped-def]
    async with session_from() as admin:
        async with admin.post(f"{server.url}/api/packages/{package}/retire", json={"version": version},
                              headers={"Authorization": f"Bearer {TOKEN}"}) as reply:  # fmt: skip
            assert reply.status == 200


async def rollout(server, extra_site: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """Three sites roll out Office 2024 v3: HQ nearly done (with ten days of history), Lyon's
    distribution point ignores Range, one Nantes PC is out of disk and another asks for a
    package that was never published. v1 is retired, v2 superseded; a viewer is complete."""
    ih = {}
    for package, version, name, size in (("PS100012", 1, "office-2024", 300_000), ("PS100012", 2, "office-2024", 2_900_000),
                                         ("PS100012", 3, "office-2024", 3_100_000), ("PS1000AB", 1, "viewer", 700_000)):  # fmt: skip
        data, ih[(package, version)] = torrent(package, version, name, size)
        assert (await publish(server, data)).status == 201
    await retire(server, "PS100012", 1)

    def office(state: str, version: int = 3, **fields: object) -> dict[str, object]:
        return {"package": "PS100012", "version": version, "info_hash": ih[("PS100012", version)], "state": state, **fields}

    state = server.runner.app[STATE]
    real, start = state.wall, time.time() - 9 * DAY
    try:
        for day in range(10):  # HQ's PCs fetched v3 over ten days, more from peers each day
            state.wall = lambda day=day: start + day * DAY
            share = (day + 1) / 10
            for n in (1, 2, 3):
                await report(server, f"127.0.1.{n}", office("complete" if day == 9 else "downloading", progress=share,
                             from_peers=int(2_600_000 * share * share), from_webseed=int(500_000 * share), uploaded=int(1_900_000 * share)))  # fmt: skip
    finally:
        state.wall = real
    await report(server, "127.0.1.4", office("downloading", progress=0.4, from_peers=1_200_000))
    await report(server, "127.0.1.5", office("complete", 2, from_webseed=2_900_000))  # not yet moved to v3
    for n in (1, 2):
        await report(server, f"127.0.1.{n}", {"package": "PS1000AB", "version": 1, "info_hash": ih[("PS1000AB", 1)],
                                               "state": "complete", "from_peers": 500_000, "from_webseed": 200_000})  # fmt: skip
    for n in (1, 2, 3):
        await report(server, f"127.1.0.{n}", office("downloading", error_kind="range-unsupported", error=RANGE_LINE))
    await report(server, "127.2.0.1", office("complete", from_peers=100_000, from_webseed=3_000_000))
    await report(server, "127.2.0.2", office("error", progress=0.7, error_kind="disk-full",
                                             error="no space left on C:\\ProgramData\\p2pdist\\cache (needs 3.0 MiB more)"))  # fmt: skip
    await report(server, "127.2.0.3", {"package": "PS1000FF", "version": None, "state": "error", "error_kind": "not-published",
                                       "error": "PS1000FF is not published in the repository"})  # fmt: skip
    if extra_site is not None:
        await report(server, "127.3.0.1", office("error", error_kind="webseed-refused", error=HOSTILE))


def settings_for(tmp_path: Path, sites: tuple[SiteSettings, ...] = SITES, refresh: int = 60):  # type: ignore[no-untyped-def]
    return make_settings(tmp_path, sites=sites, reports=ReportSettings(seen_days=30), page=PageSettings(refresh=refresh))


async def get(server, path: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    async with session_from() as client:
        async with client.get(server.url + path) as reply:
            return reply.status, reply.headers.get("Content-Type", ""), await reply.text()


async def test_index_lists_packages_versions_and_sites(tmp_path: Path) -> None:
    async with running(settings_for(tmp_path)) as server:
        await rollout(server)
        status, kind, html = await get(server, "/")
    assert status == 200 and kind.startswith("text/html")
    assert '<meta http-equiv="refresh" content="60">' in html
    page = Rows(html)
    v3 = page.find(package="PS100012", version="3")
    assert v3["name"] == "office-2024 PS100012" and v3["status"] == "current" and v3["size"] == "3.0 MiB"
    assert v3["readiness"] == "4 of 9" and v3["problems"] == "disk-full 1 range-unsupported 3"
    assert v3["published"] == time.strftime("%Y-%m-%d", time.gmtime())
    assert page.find(package="PS100012", version="2")["status"] == "superseded"
    assert page.find(package="PS100012", version="2")["readiness"] == "1 of 1"
    v1 = page.find(package="PS100012", version="1")
    assert (v1["status"], v1["readiness"]) == ("retired", "no reports")
    assert page.find(package="PS1000AB", version="1")["readiness"] == "2 of 2"
    never = page.find(package="PS1000FF", version="")
    assert (never["version"], never["status"], never["problems"]) == ("newest asked", "not published", "not-published 1")
    assert ("a", "href", "/package/PS100012") in page.attributes
    lyon = page.find(site="Lyon")
    assert (lyon["readiness"], lyon["problems"], lyon["saved28"]) == ("0 of 3", "range-unsupported 3", "–")
    assert ("a", "href", "/site/Lyon") in page.attributes


async def test_package_view_has_a_row_per_site(tmp_path: Path) -> None:
    async with running(settings_for(tmp_path)) as server:
        await rollout(server)
        status, _, html = await get(server, "/package/ps100012")
        missing = [await get(server, path) for path in ("/package/PS1000AA", "/package/nope", "/site/Nowhere")]
    assert status == 200
    page = Rows(html)
    assert [(r.get("version"), r["cells"]["status"]) for r in page.rows if "version" in r] == [
        ("3", "current"), ("2", "superseded"), ("1", "retired")]  # fmt: skip
    assert page.find(version="1")["retired"] == time.strftime("%Y-%m-%d", time.gmtime())
    sites = [r for r in page.rows if "site" in r]
    assert [r["site"] for r in sites] == ["HQ", "Lyon", "Nantes", "HQ"]  # v3: every site; v2: where PCs hold it; v1: none
    hq, lyon, nantes = (s["cells"] for s in sites[:3])
    assert (hq["readiness"], hq["downloading"], hq["error"], hq["problems"]) == ("3 of 4", "1", "0", "none")
    assert (hq["from_peers"], hq["from_webseed"], hq["uploaded"]) == ("8.6 MiB", "1.4 MiB", "5.4 MiB")
    # 28 days: 9.0 of 10.5 MB from peers; the last 7 leave out the first three, mostly from the DP.
    assert hq["saved7"] == "89%" and hq["saved28"] == "86%"
    assert (lyon["readiness"], lyon["downloading"], lyon["problems"]) == ("0 of 3", "3", "range-unsupported 3")
    assert (nantes["readiness"], nantes["error"], nantes["problems"], nantes["saved28"]) == ("1 of 2", "1", "disk-full 1", "3%")
    assert "office-2024" in html and ("a", "href", "/site/Nantes") in page.attributes
    assert [code for code, _, _ in missing] == [404, 404, 404]
    assert all(kind.startswith("text/html") for _, kind, _ in missing)
    assert "Nothing is known of package PS1000AA" in missing[0][2] and "PackageID" in missing[1][2]


async def test_site_view_lists_versions_stuck_pcs_and_28_days(tmp_path: Path) -> None:
    async with running(settings_for(tmp_path, refresh=0)) as server:
        await rollout(server)
        status, _, nantes_html = await get(server, "/site/Nantes")
        _, _, hq_html = await get(server, "/site/HQ")
    assert status == 200 and "http-equiv" not in nantes_html  # refresh = 0: the page stays put
    nantes = Rows(nantes_html)
    assert nantes.find(package="PS100012", version="3")["readiness"] == "1 of 2"
    assert nantes.find(package="PS1000FF", version="")["status"] == "not published"
    disk = nantes.find(address="127.2.0.2")
    assert (disk["package"], disk["state"], disk["progress"]) == ("PS100012 v3", "error", "70%")
    assert disk["problem"] == "disk-full no space left on C:\\ProgramData\\p2pdist\\cache (needs 3.0 MiB more)"
    assert nantes.find(address="127.2.0.3")["problem"].startswith("not-published PS1000FF is not published")
    assert "let the distribution point" not in nantes_html and "free space on the agent" in nantes_html  # the fixes shown
    hq = Rows(hq_html)
    assert hq.find(package="PS100012", version="2")["status"] == "superseded"
    assert hq.find(package="PS100012", version="3")["readiness"] == "3 of 4"
    assert "No PC of this site reports a problem." in hq_html
    days = [value for tag, name, value in hq.attributes if tag == "div" and name == "title" and "from peers" in value]
    assert len(days) == 28 and days[-1].startswith(time.strftime("%Y-%m-%d", time.gmtime()))
    assert days[17].endswith("0 B from peers, 0 B from the DP, 0 B uploaded")  # before the rollout began
    heights = [value for tag, name, value in hq.attributes if tag == "span" and name == "style"]
    assert "height: 100.0%" not in heights[:36]  # the busiest day is not in the first 18 days


async def test_hostile_site_name_and_error_line_stay_text(tmp_path: Path) -> None:
    sites = (*SITES, SiteSettings(HOSTILE, ("127.3.0.0/16",)))
    async with running(settings_for(tmp_path, sites=sites)) as server:
        await rollout(server, extra_site=HOSTILE)
        pages = {path: await get(server, path) for path in ("/", "/package/PS100012", "/site/" + quote(HOSTILE, safe=""))}
    for path, (status, _, html) in pages.items():
        assert status == 200, path
        assert "<script>" not in html and "&lt;script&gt;" in html, path
        page = Rows(html)
        assert "script" not in page.tags, path
        if not path.startswith("/site/"):
            assert ("tr", "data-site", HOSTILE) in page.attributes, path
    site = Rows(pages["/site/" + quote(HOSTILE, safe="")][2])
    assert site.find(address="127.3.0.1")["problem"] == f"webseed-refused {HOSTILE}"


# ------------------------------------------------------------------------- headless Chromium

WIDTHS = (400, 1400)
VIEWS = {"index": "/", "package": "/package/PS100012", "site-lyon": "/site/Lyon", "site-hq": "/site/HQ"}


async def test_views_in_headless_chromium_at_two_widths(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        print(f"skipped: {CHROMIUM} is missing (scripts/system-deps installs it)")
        pytest.skip(f"{CHROMIUM} is missing (scripts/system-deps installs it)")
    playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed (test extra)")
    shots = tmp_path / "shots"
    shots.mkdir()
    seen: dict[tuple[str, int], dict[str, object]] = {}
    async with running(settings_for(tmp_path / "server")) as server:
        await rollout(server)
        async with playwright_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                for width in WIDTHS:
                    page = await browser.new_page(viewport={"width": width, "height": 900})
                    for name, path in VIEWS.items():
                        await page.goto(server.url + path, timeout=15_000)
                        seen[(name, width)] = {
                            "text": await page.inner_text("main"),
                            "scroll": await page.evaluate("document.documentElement.scrollWidth"),
                            "viewport": await page.evaluate("window.innerWidth"),
                            "ratios": await page.eval_on_selector_all(".ratio", "els => els.map(e => e.innerText)"),
                            "kinds": await page.eval_on_selector_all(".kind-name", "els => els.map(e => e.innerText)"),
                            "bar": await page.eval_on_selector_all(
                                "tr[data-site='Lyon'] .bar > span, tr[data-site='HQ'] .bar > span",
                                "els => els.map(e => [e.className, Math.round(e.getBoundingClientRect().width)])"),
                        }  # fmt: skip
                        await page.screenshot(path=str(shots / f"{name}-{width}.png"), full_page=True)
                    await page.close()
            finally:
                await browser.close()
    if target := os.environ.get("P2PDIST_PAGE_SHOTS"):
        Path(target).mkdir(parents=True, exist_ok=True)
        for shot in shots.iterdir():
            shutil.copy(shot, Path(target) / shot.name)
    assert sorted(p.name for p in shots.iterdir()) == sorted(f"{n}-{w}.png" for n in VIEWS for w in WIDTHS)
    assert all(p.stat().st_size > 5_000 for p in shots.iterdir())
    for width in WIDTHS:
        index, package, lyon = seen[("index", width)], seen[("package", width)], seen[("site-lyon", width)]
        assert "office-2024" in index["text"] and "superseded" in index["text"] and "retired" in index["text"]
        assert "4 of 9" in index["ratios"] and "range-unsupported" in index["kinds"]
        assert ["3 of 4", "0 of 3", "1 of 2"] == package["ratios"][2:5]  # after v3's and v2's totals
        assert "range-unsupported" in package["kinds"] and "disk-full" in package["kinds"]
        assert "0 of 3" in lyon["ratios"] and RANGE_LINE in lyon["text"]
        bars = dict((cls, w) for cls, w in package["bar"][:2])  # HQ: 3 done, 1 on the way
        assert bars["done"] > 2 * bars["going"] > 0
    for name in VIEWS:  # nothing is wider than a phone's screen
        narrow = seen[(name, 400)]
        assert narrow["viewport"] == 400 and narrow["scroll"] <= 400, (name, narrow["scroll"])


async def test_pre_staged_sites_are_marked_on_the_package_and_site_views(tmp_path: Path) -> None:
    async with running(settings_for(tmp_path)) as server:
        await rollout(server)
        async with session_from() as admin:
            async with admin.post(f"{server.url}/api/packages/PS100012/prestage", json={"version": 3, "sites": ["Lyon"]},
                                  headers={"Authorization": f"Bearer {TOKEN}"}) as reply:  # fmt: skip
                assert reply.status == 201, await reply.text()
        _, _, package_html = await get(server, "/package/PS100012")
        _, _, lyon_html = await get(server, "/site/Lyon")
        _, _, hq_html = await get(server, "/site/HQ")
    sites = {r["site"]: r["cells"] for r in Rows(package_html).rows if "site" in r}
    assert sites["Lyon"]["site"] == "Lyon pre-staged" and sites["HQ"]["site"] == "HQ"
    assert Rows(lyon_html).find(package="PS100012", version="3")["status"] == "current pre-staged"
    assert "pre-staged" not in Rows(hq_html).find(package="PS100012", version="3")["status"]
