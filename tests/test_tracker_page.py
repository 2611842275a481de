"""The status page: rendered by headless Chromium, checked cell by cell, with a screenshot."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from p2pdist.tracker.pages import human_size
from tests.support.siteserver import (
    SITES,
    announce_url,
    info_hash_of,
    make_settings,
    peer_id,
    publish,
    running,
    session_from,
    signed_torrent,
)

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
EVIL_SITE = "<i>Branch</i> & Co"


def test_human_size() -> None:
    assert [human_size(n) for n in (0, 1023, 1024, 40_000, 5 * 2**30)] == ["0 B", "1023 B", "1.0 KiB", "39.1 KiB", "5.0 GiB"]


async def populate(server) -> tuple[bytes, bytes]:
    office, viewer = signed_torrent("PS100012", 3, "office.msi"), signed_torrent("PS1000AB", 1, "viewer.msi")
    for torrent in (office, viewer):
        assert (await publish(server, torrent)).status == 201
    ih = info_hash_of(office)
    peers = [("127.0.1.5", 0, "completed"), ("127.0.1.6", 500, ""), ("127.0.2.5", 0, ""), ("127.1.0.5", 900, "")]
    for n, (source, left, event) in enumerate(peers):
        async with session_from(source) as client:
            async with client.get(announce_url(server, ih, peer_id(n), 7000 + n, left=left, event=event)) as r:
                assert r.status == 200
    reports = [("127.0.1.5", 3_000_000, 1_000_000), ("127.1.0.5", 0, 4_000_000)]
    for source, from_peers, from_webseed in reports:
        body = {"info_hash": ih.hex(), "package": "PS100012", "version": 3, "from_peers": from_peers,
                "from_webseed": from_webseed, "uploaded": 0, "completed": True}  # fmt: skip
        async with session_from(source) as client:
            async with client.post(server.url + "/api/report", json=body) as r:
                assert r.status == 200
    return office, viewer


async def test_page_html_is_escaped(tmp_path: Path) -> None:
    sites = (SITES[0], replace(SITES[1], name=EVIL_SITE))
    async with running(make_settings(tmp_path, sites=sites)) as server:
        await populate(server)
        async with session_from() as client:
            async with client.get(server.url + "/") as r:
                page = await r.text()
                assert r.headers["Content-Type"].startswith("text/html")
        assert "<i>Branch" not in page and "&lt;i&gt;Branch&lt;/i&gt; &amp; Co" in page
        assert page.count('data-package="PS100012"') == 2 and "viewer.msi" in page and "75%" in page


async def test_page_in_headless_chromium(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("chromium is not installed (scripts/system-deps installs it)")
    playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed (test extra)")
    sites = (SITES[0], replace(SITES[1], name=EVIL_SITE))
    async with running(make_settings(tmp_path / "server", sites=sites)) as server:
        await populate(server)
        async with playwright_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 500})
                await page.goto(server.url + "/", timeout=15_000)
                assert await page.title() == "p2pdist site server"
                rows = await page.eval_on_selector_all(
                    "#packages tbody tr",
                    """rows => rows.map(r => ({package: r.dataset.package, site: r.dataset.site || null,
                        cells: Object.fromEntries([...r.querySelectorAll('td[data-col]')]
                               .map(td => [td.dataset.col, td.innerText.trim()]))}))""",
                )
                screenshot = tmp_path / "site-server.png"
                await page.screenshot(path=str(screenshot), full_page=True)
                italic = await page.query_selector_all("#packages i")
            finally:
                await browser.close()
    assert screenshot.stat().st_size > 5_000
    assert italic == []  # the hostile site name stayed text
    by_site = {(r["package"], r["site"]): r["cells"] for r in rows}
    assert set(by_site) == {("PS100012", "HQ"), ("PS100012", EVIL_SITE), ("PS1000AB", None)}
    office = rows[0]["cells"]  # package columns span the package's site rows
    assert (office["name"], office["package"], office["version"], office["size"]) == ("office.msi", "PS100012", "3", "39.1 KiB")
    hq = by_site[("PS100012", "HQ")]
    assert (hq["seeders"], hq["leechers"], hq["completed"]) == ("2", "1", "1")
    assert (hq["from_peers"], hq["from_webseed"], hq["saved"]) == ("2.9 MiB", "976.6 KiB", "75%")
    branch = by_site[("PS100012", EVIL_SITE)]
    assert branch["site"] == EVIL_SITE
    assert (branch["seeders"], branch["leechers"], branch["from_webseed"], branch["saved"]) == ("0", "1", "3.8 MiB", "0%")
    assert by_site[("PS1000AB", None)]["name"] == "viewer.msi"
