"""Peer stores: one contract for the memory and Redis twins; two servers sharing one Redis.

A real redis-server is started on a free 127.0.0.1 port in a temporary folder (no persistence).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from p2pdist.tracker.announce import TrackerFailure, parse_announce_response
from p2pdist.tracker.settings import StoreSettings, TrackerSettings
from p2pdist.tracker.store import (
    TAIL_LEN,
    MemoryPeerStore,
    PeerLimitError,
    PeerRecord,
    StoreError,
    pack_endpoint,
    unpack_endpoint,
)
from tests.support.ports import free_port
from tests.support.siteserver import (
    TOKEN,
    announce_url,
    info_hash_of,
    make_settings,
    peer_id,
    publish,
    running,
    session_from,
    signed_torrent,
)

IH = b"\x42" * 20


_prefixes = iter(range(10**6))


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    if request.param == "memory":
        yield MemoryPeerStore()
        return
    from p2pdist.tracker.redis_store import RedisPeerStore

    url = request.getfixturevalue("redis_url")
    redis_store = RedisPeerStore.from_url(url, prefix=f"t{next(_prefixes)}:")
    yield redis_store
    await redis_store.close()


def rec(ip: str, port: int, seeder: bool = False, expires: int = 200, location: str = "") -> PeerRecord:
    return PeerRecord(pack_endpoint(ip, port), f"{ip}:{port}".encode().ljust(20, b"-")[:20], seeder, (location, "s"),
                      expires)  # fmt: skip


def peers_of(swarm) -> list[tuple[str, int, bool, int]]:  # type: ignore[no-untyped-def]
    """(ip, port, seeder, expires) of every record in a returned swarm, sorted."""
    found = []
    for group in swarm.values():
        for seeder in (True, False):
            endpoints, tails = group.role(seeder)
            for index in range(len(endpoints) // group.width):
                endpoint = bytes(endpoints[index * group.width : (index + 1) * group.width])
                expires = int.from_bytes(tails[index * TAIL_LEN + 20 : (index + 1) * TAIL_LEN], "big")
                found.append((*unpack_endpoint(endpoint), seeder, expires))
    return sorted(found)


async def test_store_contract(store) -> None:
    swarm = await store.announce(IH, "HQ", rec("10.0.0.1", 1, location="a|b"), False, 100.0, 2)
    assert peers_of(swarm) == [("10.0.0.1", 1, False, 200)] and (swarm.seeders, swarm.leechers) == (0, 1)
    assert list(swarm) == [("a|b", "s")]
    await store.announce(IH, "HQ", rec("10.0.0.1", 2, seeder=True, expires=150), False, 100.0, 2)
    await store.announce(IH, "Branch", rec("fd00::1", 3), False, 100.0, 2)
    with pytest.raises(PeerLimitError):
        await store.announce(IH, "Branch", rec("10.0.0.1", 4), False, 100.0, 2)
    hq = await store.announce(IH, "HQ", rec("10.0.0.1", 1, expires=210, location="a|b"), False, 100.0, 2)  # refresh
    assert peers_of(hq) == [("10.0.0.1", 1, False, 210), ("10.0.0.1", 2, True, 150)]
    assert (hq.seeders, hq.leechers) == (1, 1)
    await store.add_completed(IH, "HQ")
    counts = await store.counts(IH, 100.0)
    assert {s: (c.seeders, c.leechers, c.completed) for s, c in counts.items()} == {"HQ": (1, 1, 1), "Branch": (0, 1, 0)}
    assert await store.peer_count() == 3
    after_stop = await store.announce(IH, "Branch", rec("fd00::1", 3), True, 100.0, 2)
    assert peers_of(after_stop) == [] and await store.peer_count() == 2
    assert (await store.counts(IH, 160.0))["HQ"].seeders == 0  # expired, not yet swept
    assert await store.sweep(160.0) == 1  # the seeder expired at 150
    assert await store.peer_count() == 1
    await store.announce(IH, "HQ", rec("10.0.0.1", 4), False, 160.0, 2)  # the freed slot is usable
    await store.drop(IH)
    assert await store.peer_count() == 0 and await store.counts(IH, 160.0) == {}


async def test_redis_down_gives_a_retry_later_failure(tmp_path: Path) -> None:
    pytest.importorskip("redis", reason="the redis package is not installed (test extra)")
    dead = StoreSettings(backend="redis", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with running(make_settings(tmp_path, store=dead)) as server:
        torrent = signed_torrent()
        assert (await publish(server, torrent)).status == 201
        async with session_from("127.1.0.5") as client:
            async with client.get(announce_url(server, info_hash_of(torrent), peer_id(1), 7001)) as r:
                assert r.status == 503
                with pytest.raises(TrackerFailure, match="temporarily unavailable"):
                    parse_announce_response(await r.read())
            async with client.get(server.url + "/") as r:  # the page says so, as a page
                assert r.status == 503 and r.content_type == "text/html"
                assert "Temporarily unavailable" in await r.text()
    with pytest.raises(StoreError):
        from p2pdist.tracker.redis_store import RedisPeerStore

        broken = RedisPeerStore.from_url(dead.redis_url)
        try:
            await broken.peer_count()
        finally:
            await broken.close()


async def test_two_servers_share_one_redis(tmp_path: Path, redis_url: str) -> None:
    tracker = TrackerSettings(interval=60, min_interval=30, peer_expiry=90, repository_refresh=0.1, sweep_interval=0.5)
    settings = make_settings(
        tmp_path, tracker=tracker, store=StoreSettings(backend="redis", redis_url=redis_url, key_prefix="two:")
    )
    torrent = signed_torrent("PS1000EF", 1)
    ih = info_hash_of(torrent)
    async with running(settings) as first, running(replace(settings, admin_token=TOKEN)) as second:
        assert (await publish(first, torrent)).status == 201
        await asyncio.sleep(0.4)  # the second instance picks the publish up from the shared data folder

        async def announce(server, source: str, n: int, port: int):
            async with session_from(source) as client:
                async with client.get(announce_url(server, ih, peer_id(n), port)) as r:
                    return parse_announce_response(await r.read())

        await announce(first, "127.0.1.5", 1, 7001)
        via_second = await announce(second, "127.0.1.6", 2, 7002)
        assert via_second.peers[0] == ("127.0.1.5", 7001)
        via_first = await announce(first, "127.0.2.7", 3, 7003)
        assert set(via_first.peers[:2]) == {("127.0.1.5", 7001), ("127.0.1.6", 7002)}
        # A report taken by one instance is in the other's console: the ledger is in Redis too.
        report = {"packages": [{"package": "PS1000EF", "version": 1, "info_hash": ih.hex(), "state": "downloading",
                                "error_kind": "range-unsupported", "error": "ignores range", "from_webseed": 0}]}  # fmt: skip
        async with session_from("127.0.1.5") as client:
            async with client.post(second.url + "/api/report", json=report) as r:
                assert r.status == 200 and (await r.json())["accepted"] == 1
            async with client.get(first.url + "/api/packages/PS1000EF/sites") as r:
                hq = next(row for row in (await r.json())["versions"][0]["sites"] if row["site"] == "HQ")
        assert (hq["agents"], hq["downloading"], hq["errors"], hq["seeding"] + hq["leeching"]) == (1, 1, {"range-unsupported": 1}, 3)
        # A pre-staging order given to one instance reaches the agents reporting to the other.
        async with session_from() as client:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with client.post(first.url + "/api/packages/PS1000EF/prestage", headers=headers, json={"sites": ["HQ"]}) as r:
                assert r.status == 201
        assert not (tmp_path / "prestage.sqlite3").exists()  # kept in Redis, not beside the catalogue
        async with session_from("127.0.1.5") as client:
            async with client.post(second.url + "/api/report", json={"packages": []}) as r:
                (order,) = (await r.json())["prestage"]
        assert (order["package"], order["version"], order["info_hash"]) == ("PS1000EF", 1, ih.hex())
        async with session_from() as client:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with client.post(second.url + "/api/packages/PS1000EF/retire", headers=headers) as r:
                assert r.status == 200
        await asyncio.sleep(0.4)
        with pytest.raises(TrackerFailure, match="not published"):
            await announce(first, "127.0.1.5", 1, 7001)
