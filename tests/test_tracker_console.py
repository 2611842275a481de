"""The console's JSON API and /metrics on a real site server, fed by reports over HTTP from
distinct 127.x source addresses (HQ = 127.0.0.0/16, Branch = 127.1.0.0/16)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.siteserver import TOKEN, announce_url, info_hash_of, make_settings, peer_id, publish, running, session_from, signed_torrent


def entry(ih: bytes, state: str, version: int = 3, **fields: object) -> dict[str, object]:
    return {"package": "PS100012", "version": version, "info_hash": ih.hex(), "state": state, **fields}


async def post(server, source: str, body: object) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    async with session_from(source) as client:
        async with client.post(server.url + "/api/report", json=body) as reply:
            return reply.status, await reply.json()


async def get(server, path: str) -> tuple[int, object]:  # type: ignore[no-untyped-def]
    async with session_from() as client:
        async with client.get(server.url + path) as reply:
            if reply.content_type == "application/json":
                return reply.status, await reply.json()
            return reply.status, await reply.text()


async def test_packages_sites_and_metrics(tmp_path: Path) -> None:
    v3, v2 = signed_torrent("PS100012", 3, "office.msi"), signed_torrent("PS100012", 2, "office.msi")
    async with running(make_settings(tmp_path)) as server:
        for torrent in (v2, v3):
            assert (await publish(server, torrent)).status == 201
        ih, old = info_hash_of(v3), info_hash_of(v2)
        async with session_from() as admin:
            async with admin.post(server.url + "/api/packages/PS100012/retire", json={"version": 2},
                                  headers={"Authorization": f"Bearer {TOKEN}"}) as r:  # fmt: skip
                assert r.status == 200
        async with session_from("127.0.1.7") as peer:  # a live seeder in HQ
            async with peer.get(announce_url(server, ih, peer_id(1), 7001, left=0)) as r:
                assert r.status == 200
        hq = [
            ("127.0.1.7", [entry(ih, "complete", from_peers=3000, from_webseed=1000, uploaded=2000, in_use=True),
                           entry(old, "complete", 2, from_webseed=4000)]),
            ("127.0.1.8", [entry(ih, "downloading", progress=0.5, from_peers=500)]),
        ]  # fmt: skip
        branch = [
            (f"127.1.0.{n}", [entry(ih, "downloading", error_kind="range-unsupported", error="http://dp/x: ignores range")])
            for n in (5, 6, 7)
        ]
        for source, entries in hq + branch:
            status, answer = await post(server, source, {"packages": entries})
            assert status == 200 and answer["accepted"] == len(entries) and answer["refused"] == [], answer
        # A PC asks for a package that was never published.
        status, answer = await post(server, "127.1.0.5", {"packages": [
            {"package": "PS1000FF", "version": None, "state": "error", "error_kind": "not-published", "error": "not published"},
            {"package": "PS100012", "version": 9, "info_hash": "cd" * 20, "state": "complete"},  # no such torrent
            {"package": "bad"},
        ]})  # fmt: skip
        assert status == 200 and answer["accepted"] == 1 and len(answer["refused"]) == 2
        assert "never published" in answer["refused"][0]["error"] and "PackageID" in answer["refused"][1]["error"]

        status, view = await get(server, "/api/packages/ps100012/sites")
        assert status == 200 and view["current_version"] == 3 and view["name"] == "office.msi"
        assert [(v["version"], v["status"]) for v in view["versions"]] == [(3, "published"), (2, "retired")]
        rows = {row["site"]: row for row in view["versions"][0]["sites"]}
        assert set(rows) == {"HQ", "Branch"}
        assert (rows["HQ"]["agents"], rows["HQ"]["complete"], rows["HQ"]["downloading"], rows["HQ"]["in_use"]) == (2, 1, 1, 1)
        assert rows["HQ"]["seeding"] == 1 and rows["HQ"]["errors"] == {}
        assert rows["HQ"]["bytes"] == {"from_peers": 3500, "from_webseed": 1000, "uploaded": 2000, "savings": 0.7778}
        assert rows["HQ"]["last_7_days"] == rows["HQ"]["bytes"] == rows["HQ"]["last_28_days"]
        assert (rows["Branch"]["agents"], rows["Branch"]["complete"], rows["Branch"]["errors"]) == (3, 0, {"range-unsupported": 3})
        assert rows["Branch"]["bytes"]["savings"] is None
        assert view["versions"][0]["totals"]["agents"] == 5
        retired = {row["site"]: row for row in view["versions"][1]["sites"]}
        assert retired["HQ"]["complete"] == 1 and retired["Branch"]["agents"] == 0

        status, unpublished = await get(server, "/api/packages/PS1000FF/sites")
        assert status == 200 and unpublished["current_version"] is None
        (only,) = unpublished["versions"]
        assert (only["version"], only["status"]) == (None, "not-published")
        branch_row = next(row for row in only["sites"] if row["site"] == "Branch")
        assert branch_row["errors"] == {"not-published": 1} and branch_row["error"] == 1
        assert (await get(server, "/api/packages/PS1000AA/sites"))[0] == 404
        assert (await get(server, "/api/packages/nope/sites"))[0] == 404

        status, listing = await get(server, "/api/sites")
        sites = {row["site"]: row for row in listing["sites"]}
        assert sites["HQ"]["configured"] and sites["HQ"]["subnets"] == ["127.0.0.0/16"]
        assert sites["HQ"]["complete"] == 2 and sites["HQ"]["packages"] == 2  # v3 and the retired v2
        assert sites["Branch"]["errors"] == {"not-published": 1, "range-unsupported": 3}
        assert listing["totals"]["bytes"]["from_webseed"] == 5000

        status, site = await get(server, "/api/sites/Branch")
        assert status == 200 and site["configured"] and site["totals"]["agents"] == 4
        assert sorted((s["address"], s["package"], s["error_kind"]) for s in site["stuck"]) == [
            ("127.1.0.5", "PS100012", "range-unsupported"),
            ("127.1.0.5", "PS1000FF", "not-published"),
            ("127.1.0.6", "PS100012", "range-unsupported"),
            ("127.1.0.7", "PS100012", "range-unsupported"),
        ]
        assert len(site["history"]) == 28 and site["history"][-1]["from_peers"] == 0
        status, hq_view = await get(server, "/api/sites/HQ")
        assert hq_view["history"][-1] == {"day": hq_view["history"][-1]["day"], "from_peers": 3500, "from_webseed": 5000,
                                          "uploaded": 2000, "savings": 0.4118}  # fmt: skip
        assert [(p["package"], p["version"], p["status"]) for p in hq_view["packages"]] == [("PS100012", 3, "published"), ("PS100012", 2, "retired")]
        assert (await get(server, "/api/sites/Nowhere"))[0] == 404

        # A report sent again changes nothing.
        await post(server, "127.0.1.8", {"packages": hq[1][1]})
        again = {row["site"]: row for row in (await get(server, "/api/packages/PS100012/sites"))[1]["versions"][0]["sites"]}
        assert again["HQ"]["bytes"] == rows["HQ"]["bytes"] and again["HQ"]["agents"] == 2

        status, text = await get(server, "/metrics")
        assert status == 200
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip

        def sample(name: str, **labels: str) -> float:
            return samples[(name, tuple(sorted(labels.items())))]

        assert sample("p2pdist_site_agents", package="PS100012", version="3", site="Branch", state="downloading") == 3
        assert sample("p2pdist_site_agent_problems", package="PS100012", version="3", site="Branch", kind="range-unsupported") == 3
        assert sample("p2pdist_site_agent_problems", package="PS1000FF", version="", site="Branch", kind="not-published") == 1
        assert sample("p2pdist_site_received_bytes_total", package="PS100012", version="3", site="HQ", source="peers") == 3500
        assert sample("p2pdist_site_uploaded_bytes_total", package="PS100012", version="3", site="HQ") == 2000
        assert sample("p2pdist_site_peers", package="PS100012", version="3", site="HQ", role="seeder") == 1
        assert sample("p2pdist_site_savings_ratio", site="HQ", window="7d") == 0.4118
        assert sample("p2pdist_tracker_registrations") == 1


async def test_reports_are_bounded(tmp_path: Path) -> None:
    torrent = signed_torrent("PS100012", 3)
    async with running(make_settings(tmp_path)) as server:
        await publish(server, torrent)
        ih = info_hash_of(torrent)
        too_many = {"packages": [entry(ih, "complete")] * 65}
        status, answer = await post(server, "127.0.1.5", too_many)
        assert status == 400 and "at most 64" in answer["error"]
        status, answer = await post(server, "127.0.1.5", {"packages": "x"})
        assert status == 400
        # Unversioned refusals from one address are capped (their PackageIDs are not in the catalogue).
        junk = [{"package": f"PS1{n:05X}", "version": None, "state": "error"} for n in range(40)]
        status, answer = await post(server, "127.0.1.5", {"packages": junk})
        assert status == 200 and answer["accepted"] == 32 and len(answer["refused"]) == 8


def test_reports_settings_from_site_toml(tmp_path: Path) -> None:
    import pytest

    from p2pdist.config import ConfigError
    from p2pdist.tracker.settings import load_server_settings

    path = tmp_path / "site.toml"
    path.write_text("[reports]\nseen_days = 2.5\nhistory_days = 90\n")
    reports = load_server_settings(path).reports
    assert (reports.seen_days, reports.history_days, reports.unknown_per_address) == (2.5, 90, 32)
    for text, word in (("history_days = 7", "reports: history_days must be at least 28"), ("seen_day = 3", "reports: unknown setting.* seen_day")):
        path.write_text(f"[reports]\n{text}\n")
        with pytest.raises(ConfigError, match=word):
            load_server_settings(path)
