"""``p2pdist prestage`` against a real site server, the report answer that carries the orders,
and the console's JSON that shows them."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp
import pytest

from p2pdist.tracker.prestage_cli import utc_time
from tests.support.processes import in_process, run_cli
from tests.support.siteserver import TOKEN, info_hash_of, make_settings, publish, running, session_from, signed_torrent

BRANCH = "127.1.0.5"  # in site Branch (test_tracker_helpers.SITES)
HQ = "127.0.0.7"


async def report_from(address: str, url: str, entries: list[dict] | None = None, tag: str | None = None) -> dict:
    body = {"packages": entries or [], **({"orders_tag": tag} if tag else {})}
    async with session_from(address) as http:
        async with http.post(url + "/api/report", data=json.dumps(body)) as reply:
            assert reply.status == 200, await reply.text()
            return await reply.json()


async def test_prestage_cli_orders_cancels_and_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with running(make_settings(tmp_path / "data")) as server:
        url = server.url
        v1, v2 = signed_torrent("PS100012", 1), signed_torrent("PS100012", 2)
        for torrent in (v1, v2, signed_torrent("PS1000AA", 4)):
            assert (await publish(server, torrent)).status == 201
        token_file = tmp_path / "admin.token"
        token_file.write_text(TOKEN + "\n")
        # A real process: order the current version to Branch now.
        code, out, err = await run_cli("prestage", "PS100012", "--site", "Branch", "--server", url, "--token-file", str(token_file))
        assert code == 0 and out.startswith("pre-staging: PS100012 current version to Branch from "), err
        code, out, _ = await in_process(capsys, "prestage", "ps100012", "--site", "Branch", "--server", url, token=TOKEN)
        assert code == 0 and out.startswith("already ordered: PS100012 current version to Branch")
        later = (datetime.now() + timedelta(hours=2)).strftime("%Y-%m-%d %H:%M")
        code, out, _ = await in_process(capsys, "prestage", "PS1000AA", "--version", "4", "--site", "Branch", "HQ", "--at", later,
                                        "--server", url, token=TOKEN)  # fmt: skip
        assert code == 0 and out.count("pre-staging: PS1000AA v4") == 2 and utc_time(later) in out
        # Each refusal is one line, with its own code.
        for args, why in [
            (("PS1000FF", "--site", "Branch"), "unknown package PS1000FF: publish it first"),
            (("PS100012", "--version", "9", "--site", "Branch"), "unknown package PS100012 v9"),
            (("PS100012", "--site", "Nowhere"), "unknown site 'Nowhere' (sites: HQ, Branch)"),
            (("PS100012", "--site", "Branch", "--at", "soon"), "bad --at 'soon'"),
            (("PS100012", "--site", "Branch", "--at", "2099-01-01 00:00"), "days ahead"),
            (("PS100012",), "name at least one --site"),
            (("junk", "--site", "Branch"), "not a PackageID"),
            (("PS1000AA", "--cancel", "--site", "HQ", "--version", "3"), "no pre-staging order for PS1000AA v3 to HQ"),
        ]:
            code, out, err = await in_process(capsys, "prestage", *args, "--server", url, token=TOKEN)
            assert code != 0 and why in err and err.count("\n") == 1 and err.startswith("p2pdist: error: "), (args, err)
        code, _, err = await in_process(capsys, "prestage", "PS100012", "--site", "Branch", "--server", url, token="wrong")
        assert code == 5 and "wrong admin token" in err
        code, out, _ = await in_process(capsys, "prestage", "--list", "--server", url, token=TOKEN)
        assert code == 0 and [line.split(" from ")[0] for line in out.splitlines()] == [
            "PS100012 current version to Branch", "PS1000AA v4 to Branch", "PS1000AA v4 to HQ",
        ]  # fmt: skip

        # An agent of Branch learns the order due now, resolved to v2; HQ's order is for later.
        answer = await report_from(BRANCH, url)
        (order,) = answer["prestage"]
        assert (order["package"], order["version"], order["info_hash"]) == ("PS100012", 2, info_hash_of(v2).hex())
        assert order["order"].startswith("PS100012:latest:Branch:") and answer["cancelled"] == []
        # An agent that holds the lists' tag is sent the tag alone while nothing changes.
        quiet = await report_from(BRANCH, url, tag=answer["orders_tag"])
        assert "prestage" not in quiet and quiet["orders_tag"] == answer["orders_tag"]
        assert (await report_from(BRANCH, url, tag="0" * 16))["prestage"] == answer["prestage"]
        assert (await report_from(HQ, url))["prestage"] == []
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/api/packages/PS100012/sites") as reply:
                view = await reply.json()
            newest = view["versions"][0]
            assert newest["version"] == 2 and [p["site"] for p in newest["prestaged"]] == ["Branch"]
            rows = {row["site"]: row for row in newest["sites"]}
            assert rows["Branch"]["prestaged_since"] == order["since"] and rows["HQ"]["prestaged_since"] is None
            assert all(row["prestaged_since"] is None for row in view["versions"][1]["sites"])
            async with http.get(f"{url}/api/sites/HQ") as reply:
                site = await reply.json()
            assert [(p["package"], p["version"]) for p in site["prestaged"]] == [("PS1000AA", 4)]
            assert [(p["package"], p["prestaged_since"]) for p in site["packages"]] == [("PS1000AA", utc_time(later))]
            async with http.get(f"{url}/api/packages/PS100012/prestage") as reply:
                assert reply.status == 401  # the order list is the admin's

        # Cancelled: the agents hear of it; a retired version is no longer ordered.
        code, out, _ = await in_process(capsys, "prestage", "PS100012", "--cancel", "--server", url, token=TOKEN)
        assert code == 0 and out.startswith("cancelled: PS100012 current version to Branch")
        answer = await report_from(BRANCH, url)
        assert answer["prestage"] == [] and answer["cancelled"] == [{"order": order["order"], "package": "PS100012"}]
        code, out, _ = await in_process(capsys, "retire", "PS1000AA", "--server", url, token=TOKEN)
        assert code == 0
        code, _, err = await in_process(capsys, "prestage", "PS1000AA", "--site", "HQ", "--server", url, token=TOKEN)
        assert code == 5 and "PS1000AA is retired: publish it again to pre-stage it" in err


async def test_prestage_api_errors_are_json(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path / "data")) as server:
        assert (await publish(server, signed_torrent("PS100012", 1))).status == 201
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            for body, status, why in [
                (b"", 400, "body must be JSON"),
                (b"[1]", 400, "JSON object"),
                (b'{"sites": []}', 400, "non-empty list"),
                (b'{"sites": ["Branch"], "at": "2026-12-03 20:00"}', 400, "UTC offset"),
                (b'{"sites": ["Branch"], "version": "x"}', 400, "version must be"),
            ]:
                async with http.post(f"{server.url}/api/packages/PS100012/prestage", data=body) as reply:
                    assert reply.status == status and why in (await reply.json())["error"], body
            soon = datetime.fromtimestamp(time.time() + 3600, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            async with http.post(f"{server.url}/api/packages/PS100012/prestage", json={"sites": ["HQ"], "at": soon}) as reply:
                assert reply.status == 201 and (await reply.json())["orders"][0]["at"] == soon
            async with http.get(f"{server.url}/api/prestage") as reply:
                assert [o["site"] for o in (await reply.json())["orders"]] == ["HQ"]
            async with http.delete(f"{server.url}/api/packages/PS100012/prestage?site=Branch") as reply:
                assert reply.status == 404
            async with http.delete(f"{server.url}/api/packages/PS100012/prestage?site=HQ") as reply:
                assert reply.status == 200 and len((await reply.json())["cancelled"]) == 1
    assert sys.version_info >= (3, 11)
