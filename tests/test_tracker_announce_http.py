"""The tracker over real HTTP on 127.0.0.1: sites by source address, bad input, limits."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from p2pdist import bencode
from p2pdist.tracker.announce import (
    TrackerFailure,
    build_scrape_url,
    parse_announce_response,
    parse_scrape_response,
)
from p2pdist.tracker.settings import LimitSettings, LocationSettings
from tests.support.rawhttp import raw_http
from tests.support.siteserver import (
    SITES,
    TOKEN,
    announce_url,
    get_announce,
    info_hash_of,
    make_settings,
    peer_id,
    publish,
    quoted,
    running,
    session_from,
    signed_torrent,
)

TORRENT = signed_torrent()
IH = info_hash_of(TORRENT)


async def test_announce_gives_only_peers_of_the_same_site(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as server:
        assert (await publish(server, TORRENT)).status == 201
        await get_announce(server, "127.0.1.5", 1, 7001)  # HQ floor-a
        await get_announce(server, "127.0.2.5", 2, 7002)  # HQ floor-b
        await get_announce(server, "127.1.0.5", 3, 7003)  # Branch
        await get_announce(server, "127.3.0.5", 4, 7004)  # no site
        hq = await get_announce(server, "127.0.1.6", 5, 7005, event="started")
        assert hq.peers == (("127.0.1.5", 7001), ("127.0.2.5", 7002), ("127.0.0.200", 7000))
        assert (hq.interval, hq.min_interval, hq.incomplete) == (60, 30, 3)
        branch = await get_announce(server, "127.1.0.6", 6, 7006)
        assert branch.peers == (("127.1.0.5", 7003),)
        outsider = await get_announce(server, "127.3.0.6", 7, 7007)
        assert outsider.peers == () and outsider.warning
        # non-compact answers carry peer ids
        plain = await get_announce(server, "127.1.0.7", 8, 7008, compact=False)
        assert plain.peers[0] in (("127.1.0.5", 7003), ("127.1.0.6", 7006)) and len(plain.peer_ids) == 2


async def test_a_privileged_port_is_refused_and_never_handed_out(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as server:
        assert (await publish(server, TORRENT)).status == 201
        for port in (22, 445, 1023):
            with pytest.raises(TrackerFailure, match=f"port {port} is below 1024"):
                await get_announce(server, "127.0.1.5", 1, port)
        first = await get_announce(server, "127.0.1.5", 2, 1024)
        assert first.peers == (("127.0.0.200", 7000),)  # the site seed only: nobody on port 22
        again = await get_announce(server, "127.0.1.6", 3, 7003)
        assert ("127.0.1.5", 1024) in again.peers and all(port >= 1024 for _, port in again.peers)


async def test_announces_tell_each_site_its_networks(tmp_path: Path) -> None:
    """The agents dial nothing outside them (agent.targets); stock clients ignore the key."""
    isolated = (SITES[0], replace(SITES[1], locations=(LocationSettings("north", ("127.1.1.0/24",)),), isolate_locations=True))
    async with running(make_settings(tmp_path, sites=isolated)) as server:
        assert (await publish(server, TORRENT)).status == 201
        hq = await get_announce(server, "127.0.1.5", 1, 7001)
        assert hq.site_networks == ("127.0.0.0/16", "127.0.1.0/24", "127.0.2.0/24", "127.0.0.200/32")  # + its seed
        plain = await get_announce(server, "127.0.2.5", 2, 7002, compact=False)
        assert plain.site_networks == hq.site_networks
        north = await get_announce(server, "127.1.1.5", 3, 7003)
        assert north.site_networks == ("127.1.1.0/24",)  # an isolated location: only its own
        outsider = await get_announce(server, "127.3.0.6", 4, 7004)
        assert outsider.site_networks == ()


async def test_scrape_and_unpublished_torrent(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as server:
        await publish(server, TORRENT)
        await get_announce(server, "127.1.0.5", 1, 7001, left=0, event="completed")
        with pytest.raises(TrackerFailure, match="not published") as refused:
            await get_announce(server, "127.1.0.5", 1, 7001, ih=b"\x01" * 20)
        assert refused.value.kind == "not-published"  # beside the reason, for agents to act on
        async with session_from("127.1.0.9") as session:
            url = build_scrape_url(server.url + "/announce", [IH, b"\x01" * 20])
            async with session.get(url) as response:
                stats = parse_scrape_response(await response.read())
        assert list(stats.files) == [IH]
        assert (stats.files[IH].complete, stats.files[IH].downloaded) == (1, 1)
        async with session_from() as session:
            async with session.get(server.url + "/scrape") as response:
                assert response.status == 400 and b"full scrape" in await response.read()


async def test_ipv6_peer_via_proxy_ip_parameter(tmp_path: Path) -> None:
    sites = (*SITES[:1], replace(SITES[1], subnets=("127.1.0.0/16", "fd00:5::/64")))
    async with running(make_settings(tmp_path, sites=sites, proxies=("127.5.5.5",))) as server:
        await publish(server, TORRENT)
        await get_announce(server, "127.5.5.5", 1, 7001, ip="fd00:5::1")
        # ip= from an ordinary client is ignored: this peer registers as 127.1.0.8
        await get_announce(server, "127.1.0.8", 2, 7002, ip="fd00:5::2")
        async with session_from("127.5.5.5") as session:
            url = announce_url(server, IH, peer_id(3), 7003)
            async with session.get(url, headers={"X-Forwarded-For": "203.0.113.9, 127.1.0.9"}) as response:
                forwarded = parse_announce_response(await response.read())
        assert set(forwarded.peers) == {("fd00:5::1", 7001), ("127.1.0.8", 7002)}
        async with session_from("127.1.0.10") as session:
            async with session.get(announce_url(server, IH, peer_id(4), 7004)) as response:
                raw = bencode.decode(await response.read())
        assert raw[b"peers6"] == bytes.fromhex("fd000005000000000000000000000001") + (7001).to_bytes(2, "big")
        assert len(raw[b"peers"]) == 12  # 127.1.0.8 and 127.1.0.9 (from X-Forwarded-For)


def _get(path: str, extra: bytes = b"") -> bytes:
    return b"GET " + path.encode("latin-1") + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + extra + b"\r\n"


async def test_bad_input_gets_clear_errors_and_server_keeps_serving(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as server:
        await publish(server, TORRENT)
        ih, pid = quoted(IH), quoted(peer_id(1))
        base = f"/announce?info_hash={ih}&peer_id={pid}&left=5"
        cases = [
            (f"/announce?info_hash=%ZZ&peer_id={pid}&port=1&left=0", b"400", b"bad %-escape"),
            (f"/announce?info_hash=abc&peer_id={pid}&port=1&left=0", b"400", b"info_hash must be 20 bytes"),
            (f"{base}&port=0", b"400", b"port must be 1-65535"),
            (f"{base}&port=99999", b"400", b"port 99999 exceeds"),
            (f"{base}&port=abc", b"400", b"port must be a non-negative integer"),
            (f"{base}&port=1&event=bogus", b"400", b"unknown event"),
            (f"{base}&port=1&numwant=" + "9" * 25, b"400", b"numwant must be"),
            ("/announce?" + "&".join(["a=1"] * 70), b"400", b"more than 64"),
            ("/announce?" + "x" * 5000, b"400", b""),  # request line over the 4096 limit
            ("/packages/../../etc/passwd", b"404", b""),
            ("/packages/..%2F..%2Fetc%2Fpasswd.torrent", b"404", b"not a PackageID"),
            ("/packages/PS100012/..%2F..%2Frepository.sqlite3.torrent", b"404", b""),
            ("/packages/%2e%2e/1.torrent", b"404", b"not a PackageID"),
            ("/packages/PS100012/99999999999.torrent", b"404", b""),
        ]
        for path, status, reason in cases:
            answer = await asyncio.to_thread(raw_http, server.port, _get(path))
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.split(b" ")[1] == status, (path, answer[:200])
            assert reason in body, (path, body[:200])
        huge_header = _get("/", b"X-Big: " + b"a" * 6000 + b"\r\n")
        answer = await asyncio.to_thread(raw_http, server.port, huge_header)
        assert answer.split(b" ")[1] in (b"400", b"431")
        many_headers = _get("/", b"".join(b"X-H%d: 1\r\n" % i for i in range(200)))
        answer = await asyncio.to_thread(raw_http, server.port, many_headers)
        assert answer.split(b" ")[1] in (b"400", b"431")
        garbage = await asyncio.to_thread(raw_http, server.port, b"\x16\x03\x01\x00\xff garbage\r\n\r\n")
        assert garbage.split(b"\r\n")[0].split(b" ")[1] == b"400"
        # huge numwant within 20 digits is capped, not refused; and the server still serves
        response = await get_announce(server, "127.0.1.5", 1, 7001, numwant=10**15)
        assert response.interval == 60
        answer = await asyncio.to_thread(raw_http, server.port, _get(f"{base}&port=7002"))
        assert answer.startswith(b"HTTP/1.1 200") and b"8:interval" in answer


async def test_rate_limit_is_per_address(tmp_path: Path) -> None:
    limits = LimitSettings(announce_rate=0.5, announce_burst=3)
    async with running(make_settings(tmp_path, limits=limits)) as server:
        await publish(server, TORRENT)
        for _ in range(3):
            await get_announce(server, "127.1.0.5", 1, 7001)
        with pytest.raises(TrackerFailure, match="slow down") as info:
            await get_announce(server, "127.1.0.5", 1, 7001)
        assert info.value.retry_in is not None and info.value.retry_in >= 1
        other = await get_announce(server, "127.1.0.6", 2, 7002)
        assert other.peers == (("127.1.0.5", 7001),)


async def test_registration_limit_per_address(tmp_path: Path) -> None:
    limits = LimitSettings(announce_rate=0, peers_per_address=2)
    async with running(make_settings(tmp_path, limits=limits)) as server:
        await publish(server, TORRENT)
        await get_announce(server, "127.1.0.5", 1, 7001)
        await get_announce(server, "127.1.0.5", 2, 7002)
        with pytest.raises(TrackerFailure, match="too many registrations"):
            await get_announce(server, "127.1.0.5", 3, 7003)
        assert len((await get_announce(server, "127.1.0.6", 4, 7004)).peers) == 2


async def test_retire_through_another_instance_drops_local_peers(tmp_path: Path) -> None:
    from p2pdist.tracker.settings import TrackerSettings
    from p2pdist.tracker.web import STATE

    tracker = TrackerSettings(interval=60, min_interval=30, peer_expiry=90, repository_refresh=0.1)
    settings = make_settings(tmp_path, tracker=tracker)
    async with running(settings) as first, running(settings) as second:
        assert (await publish(first, TORRENT)).status == 201
        await get_announce(first, "127.1.0.5", 1, 7001)
        state = first.runner.app[STATE]
        assert await state.store.peer_count() == 1
        async with session_from() as session:
            url = second.url + "/api/packages/PS100012/retire"
            async with session.post(url, headers={"Authorization": "Bearer " + TOKEN}) as response:
                assert response.status == 200
        for _ in range(50):
            if await state.store.peer_count() == 0:
                break
            await asyncio.sleep(0.05)
        assert await state.store.peer_count() == 0
        with pytest.raises(TrackerFailure, match="not published"):
            await get_announce(first, "127.1.0.5", 1, 7001)
