"""The tracker logic without HTTP: sites, locations, seeds, limits, expiry (memory store)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pdist.config import ConfigError
from p2pdist.tracker.announce import AnnounceRequest
from p2pdist.tracker.ratelimit import RateLimiter
from p2pdist.tracker.settings import LocationSettings, SiteSettings, TrackerSettings
from p2pdist.tracker.sites import SiteMap, normalize_address, parse_endpoint
from p2pdist.tracker.store import MemoryPeerStore
from p2pdist.tracker.swarm import NO_SITE_WARNING, NOT_REGISTERED, Tracker, TrackerRefusal

IH = b"\x11" * 20
SITES = (
    SiteSettings(
        "HQ",
        ("10.0.0.0/8",),
        (LocationSettings("floor-a", ("10.1.0.0/16",)), LocationSettings("floor-b", ("10.2.0.0/16",))),
        ("10.9.9.9:7000", "[fd00::9]:7001"),
    ),
    SiteSettings("Branch", ("192.168.5.0/24", "fd00:5::/64")),
)
SETTINGS = TrackerSettings(interval=60, min_interval=30, peer_expiry=90, numwant_default=50, numwant_max=100)


def make_tracker(per_address: int = 0, default_site: str = "", tracked=(IH,)) -> tuple[Tracker, SiteMap]:
    sites = SiteMap(SITES, default_site, proxies=("10.99.0.1",))
    tracker = Tracker(MemoryPeerStore(), SETTINGS, set(tracked).__contains__, sites.seeds, per_address, random.Random(7))
    return tracker, sites


def req(n: int, port: int = 6881, left: int = 100, event: str = "", numwant: int | None = None, ih: bytes = IH):
    return AnnounceRequest(ih, b"-PD0001-" + f"{n:012d}".encode(), port, 0, 0, left, event, numwant)


async def announce(tracker: Tracker, sites: SiteMap, address: str, n: int, now: float = 1000.0, **kw):
    return await tracker.announce(req(n, **kw), sites.place_of(normalize_address(address)), now)


def test_site_map_longest_prefix_and_proxies() -> None:
    sites = SiteMap(SITES, "", proxies=("10.99.0.0/24",))
    assert (sites.place_of("10.1.2.3").site, sites.place_of("10.1.2.3").location) == ("HQ", "floor-a")
    assert (sites.place_of("10.3.0.1").site, sites.place_of("10.3.0.1").location) == ("HQ", "")
    assert sites.place_of("fd00:5::42").site == "Branch"
    assert sites.place_of("8.8.8.8").site is None
    assert SiteMap(SITES, "Elsewhere").place_of("8.8.8.8").site == "Elsewhere"
    # X-Forwarded-For and ip= only from a proxy; the rightmost non-proxy entry wins.
    assert sites.client_address("192.168.5.4", "10.1.0.1", "10.2.0.1") == "192.168.5.4"
    assert sites.client_address("10.99.0.1", "6.6.6.6, 10.1.0.1, 10.99.0.7", None) == "10.1.0.1"
    assert sites.client_address("10.99.0.1", None, "10.2.0.1") == "10.2.0.1"
    assert sites.client_address("10.99.0.1", "not-an-ip", "also-bad") == "10.99.0.1"
    assert sites.client_address("::ffff:10.1.0.1") == "10.1.0.1"
    assert sites.seeds["HQ"] == (("10.9.9.9", 7000), ("fd00::9", 7001))


@pytest.mark.parametrize(
    ("sites", "message"),
    [
        ((SiteSettings("A", ("10.0.0.0/33",)),), "sites[0].subnets"),
        ((SiteSettings("A", (), seeds=("10.0.0.1",)),), "sites[0].seeds"),
        ((SiteSettings("A"), SiteSettings("A")), "duplicate site name"),
    ],
)
def test_bad_site_config_is_a_config_error(sites, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SiteMap(sites)
    with pytest.raises(ConfigError):
        parse_endpoint("10.0.0.1:0", "x")


async def test_peers_meet_only_their_own_site_location_first() -> None:
    tracker, sites = make_tracker()
    await announce(tracker, sites, "10.1.0.5", 1)  # floor-a, subnet 10.1.0
    await announce(tracker, sites, "10.1.7.5", 2)  # floor-a, another subnet
    await announce(tracker, sites, "10.2.0.5", 3)  # floor-b
    await announce(tracker, sites, "10.3.0.5", 4)  # HQ without location
    await announce(tracker, sites, "192.168.5.9", 5)  # Branch
    response = await announce(tracker, sites, "10.1.0.6", 6)
    addresses = [ip for ip, _ in response.peers]
    assert addresses[:3] == ["10.1.0.5", "10.1.7.5", addresses[2]]
    assert set(addresses[2:4]) == {"10.2.0.5", "10.3.0.5"}
    assert addresses[4:] == ["10.9.9.9", "fd00::9"] or addresses[4:] == ["fd00::9", "10.9.9.9"]
    assert "192.168.5.9" not in addresses
    assert (response.complete, response.incomplete) == (0, 5)
    branch = await announce(tracker, sites, "192.168.5.10", 7)
    assert branch.peers == (("192.168.5.9", 6881),)


async def test_seeders_get_only_leechers_and_no_site_seeds() -> None:
    tracker, sites = make_tracker()
    await announce(tracker, sites, "10.1.0.5", 1, left=0)
    await announce(tracker, sites, "10.1.0.6", 2, left=500)
    seeder = await announce(tracker, sites, "10.1.0.7", 3, left=0)
    assert seeder.peers == (("10.1.0.6", 6881),)
    assert (seeder.complete, seeder.incomplete) == (2, 1)


async def test_stopped_removes_and_completed_counts() -> None:
    tracker, sites = make_tracker()
    await announce(tracker, sites, "192.168.5.1", 1)
    await announce(tracker, sites, "192.168.5.2", 2, left=0, event="completed")
    stopped = await announce(tracker, sites, "192.168.5.1", 1, event="stopped")
    assert stopped.peers == ()
    counts = await tracker.store.counts(IH, 1000.0)
    assert counts["Branch"].seeders == 1 and counts["Branch"].leechers == 0 and counts["Branch"].completed == 1
    scrape = await tracker.scrape((IH, b"\x22" * 20), sites.place_of("192.168.5.3"), 1000.0)
    assert list(scrape.files) == [IH] and scrape.files[IH].complete == 1 and scrape.files[IH].downloaded == 1


async def test_unregistered_torrent_and_no_site() -> None:
    tracker, sites = make_tracker()
    with pytest.raises(TrackerRefusal, match=NOT_REGISTERED):
        await announce(tracker, sites, "10.1.0.5", 1, ih=b"\x33" * 20)
    await announce(tracker, sites, "10.1.0.5", 1)
    outsider = await announce(tracker, sites, "8.8.8.8", 2)
    assert outsider.peers == () and outsider.warning == NO_SITE_WARNING
    assert await tracker.store.peer_count() == 1  # the outsider was not registered


async def test_numwant_is_capped_and_zero_gives_none() -> None:
    tracker, sites = make_tracker()
    for n in range(120):
        await announce(tracker, sites, f"10.3.{n // 200}.{n % 200 + 1}", n)
    big = await announce(tracker, sites, "10.3.9.9", 999, numwant=10**9)
    assert len(big.peers) == SETTINGS.numwant_max
    assert len(set(big.peers)) == len(big.peers)
    assert (await announce(tracker, sites, "10.3.9.9", 999, numwant=0)).peers == ()
    assert len((await announce(tracker, sites, "10.3.9.9", 999)).peers) == SETTINGS.numwant_default


async def test_per_address_registration_limit() -> None:
    tracker, sites = make_tracker(per_address=2)
    await announce(tracker, sites, "10.1.0.5", 1, port=1)
    await announce(tracker, sites, "10.1.0.5", 1, port=2)
    await announce(tracker, sites, "10.1.0.5", 1, port=2)  # re-announce of a known endpoint is fine
    with pytest.raises(TrackerRefusal, match="too many registrations"):
        await announce(tracker, sites, "10.1.0.5", 1, port=3)
    await announce(tracker, sites, "10.1.0.5", 1, port=1, event="stopped")
    await announce(tracker, sites, "10.1.0.5", 1, port=3)
    assert await tracker.store.peer_count() == 2


async def test_expiry_sweep_and_retire_drop() -> None:
    tracker, sites = make_tracker()
    await announce(tracker, sites, "10.1.0.5", 1, now=1000.0)
    await announce(tracker, sites, "10.1.0.6", 2, now=1050.0)
    late = await announce(tracker, sites, "10.1.0.7", 3, now=1095.0)
    assert [ip for ip, _ in late.peers[:1]] == ["10.1.0.6"]  # 10.1.0.5 expired at 1090
    assert await tracker.store.sweep(1095.0) == 1
    assert await tracker.store.peer_count() == 2
    await tracker.store.drop(IH)
    assert await tracker.store.peer_count() == 0 and await tracker.store.counts(IH, 1095.0) == {}


def test_rate_limiter_token_bucket() -> None:
    limiter = RateLimiter(rate=1.0, burst=3, max_addresses=4)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after("a", 0.0) == 1
    assert limiter.allow("a", 1.0) and not limiter.allow("a", 1.0)
    assert limiter.allow("b", 0.0)
    for n in range(10):  # the table stays bounded
        limiter.allow(f"x{n}", 100.0)
    assert len(limiter) <= 4
    assert RateLimiter(0, 1).allow("z", 0.0)


addresses = st.sampled_from(
    ["10.1.0.1", "10.1.0.2", "10.1.3.1", "10.2.0.1", "10.2.0.2", "10.4.0.1", "192.168.5.1", "192.168.5.2", "fd00:5::1", "7.7.7.7"]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(addresses, st.integers(1, 3), st.booleans(), st.sampled_from(["", "stopped"])), max_size=40))
async def test_any_announce_sequence_keeps_sites_apart_and_groups_ordered(steps) -> None:
    tracker, sites = make_tracker()
    for address, port, seeder, event in steps:
        place = sites.place_of(normalize_address(address))
        response = await tracker.announce(req(port, port=port, left=0 if seeder else 9, event=event), place, 1000.0)
        seeds = set(sites.seeds.get(place.site or "", ()))
        rank = []
        for ip, peer_port in response.peers:
            assert (ip, peer_port) != (place.address, port)
            if (ip, peer_port) in seeds:
                rank.append(3)
                continue
            other = sites.place_of(ip)
            assert other.site == place.site
            rank.append(1 if other.location == place.location else 2)
        assert rank == sorted(rank)


async def test_isolated_locations_meet_only_their_own_location() -> None:
    """Branch offices behind WAN links: no peers from the other branch, site seeds still offered."""
    site = SiteSettings(
        "Lyon",
        ("10.20.0.0/16",),
        (LocationSettings("A", ("10.20.1.0/24",)), LocationSettings("B", ("10.20.2.0/24",))),
        ("10.20.0.5:6881",),
        isolate_locations=True,
    )
    sites = SiteMap((site,), "")
    tracker = Tracker(MemoryPeerStore(), SETTINGS, {IH}.__contains__, sites.seeds, 0, random.Random(1), isolated_sites=frozenset({"Lyon"}))
    for n, address in enumerate(["10.20.1.1", "10.20.1.2", "10.20.2.1", "10.20.2.2"]):
        await announce(tracker, sites, address, n, port=6881 + n)
    answer = await announce(tracker, sites, "10.20.1.3", 9)
    from p2pdist.tracker.announce import parse_announce_response

    peers = sorted(parse_announce_response(answer.encode(True)).peers)
    assert peers == [("10.20.0.5", 6881), ("10.20.1.1", 6881), ("10.20.1.2", 6882)]
    shared = Tracker(MemoryPeerStore(), SETTINGS, {IH}.__contains__, sites.seeds, 0, random.Random(1))
    for n, address in enumerate(["10.20.1.1", "10.20.2.1"]):
        await announce(shared, sites, address, n, port=6881 + n)
    peers = parse_announce_response((await announce(shared, sites, "10.20.1.3", 9)).encode(True)).peers
    assert peers[0] == ("10.20.1.1", 6881) and ("10.20.2.1", 6882) in peers  # own location first
