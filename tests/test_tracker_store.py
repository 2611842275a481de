"""The memory store's packed groups, the rate limiter and the hand-written codec fast paths,
each checked against a plain reference (hypothesis)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pdist import bencode
from p2pdist.tracker import announce
from p2pdist.tracker.announce import AnnounceError, AnnounceRequest, encode_compact_body, parse_announce_query
from p2pdist.tracker.ratelimit import RateLimiter
from p2pdist.tracker.settings import TrackerSettings
from p2pdist.tracker.sites import Place
from p2pdist.tracker.store import (
    TAIL_LEN,
    MemoryPeerStore,
    PeerGroup,
    PeerLimitError,
    PeerRecord,
    SiteSwarm,
    pack_endpoint,
)
from p2pdist.tracker.swarm import Tracker

IH = b"\x77" * 20


def contents(group: PeerGroup) -> dict[bytes, tuple[bytes, int, bool]]:
    """endpoint -> (peer id, expiry, seeder), read back from the packed arrays."""
    found = {}
    for seeder in (True, False):
        endpoints, tails = group.role(seeder)
        assert len(endpoints) // group.width == len(tails) // TAIL_LEN
        for i in range(len(tails) // TAIL_LEN):
            endpoint = bytes(endpoints[i * group.width : (i + 1) * group.width])
            tail = tails[i * TAIL_LEN : (i + 1) * TAIL_LEN]
            assert endpoint not in found
            found[endpoint] = (bytes(tail[:20]), int.from_bytes(tail[20:], "big"), seeder)
    return found


def test_find_skips_matches_across_two_entries() -> None:
    group = PeerGroup("", 6)
    group.put(bytes([1, 2, 3, 4, 5, 6]), b"a" * 20, 100, False)
    group.put(bytes([7, 8, 9, 10, 11, 12]), b"b" * 20, 100, False)
    straddling = bytes([4, 5, 6, 7, 8, 9])  # the end of one entry and the start of the next
    assert not group.holds(straddling)
    assert group.put(straddling, b"c" * 20, 100, False) is None  # a new peer, not a refresh
    assert len(group) == 3 and group.remove(bytes([7, 8, 9, 10, 11, 12])) is False
    assert set(contents(group)) == {bytes([1, 2, 3, 4, 5, 6]), straddling}


operations = st.lists(
    st.tuples(
        st.sampled_from(["put", "remove", "expire"]),
        st.integers(0, 7),  # which endpoint
        st.booleans(),  # seeder
        st.integers(90, 130),  # expiry (put) or now (expire)
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(operations, st.sampled_from([4, 16]))
def test_group_and_swarm_behave_like_a_dict(steps, address_len: int) -> None:
    swarm = SiteSwarm()
    model: dict[bytes, tuple[bytes, int, bool]] = {}
    endpoints = [bytes([10, n]) + bytes(address_len - 2) + n.to_bytes(2, "big") for n in range(8)]
    for op, which, seeder, number in steps:
        endpoint = endpoints[which]
        record = PeerRecord(endpoint, bytes([which]) * 20, seeder, ("loc", "net"), number)
        if op == "put":
            assert swarm.put(record) == (endpoint not in model)
            model[endpoint] = (record.peer_id, number, seeder)
        elif op == "remove":
            assert swarm.remove(record) == (endpoint in model)
            model.pop(endpoint, None)
        else:
            gone = swarm.expire(number)
            expired = {e for e, (_, expires, _) in model.items() if expires <= number}
            assert sorted(gone) == sorted(expired)
            model = {e: v for e, v in model.items() if e not in expired}
        group = swarm.get(("loc", "net"))
        assert (contents(group) if group is not None else {}) == model
        assert (swarm.seeders, swarm.leechers) == (
            sum(1 for v in model.values() if v[2]),
            sum(1 for v in model.values() if not v[2]),
        )
        assert group is None or all(group.soonest <= v[1] for v in model.values())


async def test_sweep_and_drop_keep_the_address_counts() -> None:
    store = MemoryPeerStore()
    for n in range(50):
        record = PeerRecord(pack_endpoint("10.0.0.1", 1000 + n), b"%020d" % n, n % 2 == 0, ("", "10.0.0"), 100 + n)
        store.announce_now(bytes([n % 5]) * 20, "S", record, False, 0.0, 0)
    assert await store.peer_count() == 50
    assert await store.sweep(124.0) == 25  # expiry 100..124 gone
    assert await store.peer_count() == 25
    limited = PeerRecord(pack_endpoint("10.0.0.1", 9), b"x" * 20, False, ("", "10.0.0"), 500)
    with pytest.raises(PeerLimitError):
        store.announce_now(IH, "S", limited, False, 125.0, 25)
    for n in range(5):
        await store.drop(bytes([n]) * 20)
    assert await store.peer_count() == 0 and await store.sweep(1e9) == 0


def test_large_swarms_are_sampled_without_repeats_and_seeders_get_leechers() -> None:
    store = MemoryPeerStore()
    settings = TrackerSettings(interval=60, min_interval=30, peer_expiry=90, numwant_default=50, numwant_max=100)
    tracker = Tracker(store, settings, lambda h: True, {}, 0, random.Random(3))
    place = Place("10.0.0.1", "S", "", "10.0.0", bytes([10, 0, 0, 1]), ("", "10.0.0"))
    for n in range(300):
        request = AnnounceRequest(IH, b"%020d" % n, 1000 + n, 0, 0, 0 if n < 100 else 5)
        tracker.announce_now(request, place, 1000.0)
    leecher = tracker.announce_now(AnnounceRequest(IH, b"%020d" % 150, 1150, 0, 0, 5, numwant=80), place, 1000.0)
    assert leecher.count == 80 and len(set(leecher.endpoints)) == 80
    assert pack_endpoint("10.0.0.1", 1150) not in leecher.endpoints
    seeder = tracker.announce_now(AnnounceRequest(IH, b"%020d" % 7, 1007, 0, 0, 0), place, 1000.0)
    ports = [port for _, port in seeder.peers]
    assert len(ports) == 50 and all(port >= 1100 for port in ports)  # only leechers for a seeder
    assert (seeder.complete, seeder.incomplete) == (100, 200)
    # over many announces every leecher is handed out (the random walk covers the swarm)
    seen = set()
    for _ in range(40):
        seen |= set(tracker.announce_now(AnnounceRequest(IH, b"%020d" % 7, 1007, 0, 0, 0), place, 1000.0).endpoints)
    assert len(seen) == 200


def _bucket(steps, rate: float, burst: int) -> list[bool]:  # type: ignore[no-untyped-def]
    """The token bucket written the obvious way: the reference for RateLimiter."""
    buckets: dict[str, tuple[float, float]] = {}
    allowed = []
    for address, now in steps:
        tokens, last = buckets.get(address, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        allowed.append(tokens >= 1.0)
        buckets[address] = (tokens - 1.0 if tokens >= 1.0 else tokens, now)
    return allowed


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 8)), max_size=60),
    st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    st.integers(1, 5),
)
def test_rate_limiter_matches_a_token_bucket(steps, rate: float, burst: int) -> None:
    times = [(address, sum(gap for _, gap in steps[: i + 1]) / 8) for i, (address, _) in enumerate(steps)]
    limiter = RateLimiter(rate, burst)
    assert [limiter.allow(address, now) for address, now in times] == _bucket(times, rate, burst)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**31),
    st.none() | st.integers(0, 2**31),
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.binary(max_size=60),
    st.binary(max_size=54),
    st.none() | st.binary(min_size=1, max_size=40),
)
def test_hand_written_compact_reply_is_canonical_bencoding(interval, min_interval, complete, incomplete, peers,
                                                           peers6, warning) -> None:  # fmt: skip
    expected: dict[bytes, object] = {b"complete": complete, b"incomplete": incomplete, b"interval": interval,
                                     b"peers": peers}  # fmt: skip
    if min_interval is not None:
        expected[b"min interval"] = min_interval
    if peers6:
        expected[b"peers6"] = peers6
    if warning:
        expected[b"warning message"] = warning
    body = encode_compact_body(interval, min_interval, complete, incomplete, peers, peers6, warning)
    assert body == bencode.encode(expected)


escaped = st.lists(
    st.one_of(
        st.binary(min_size=1, max_size=3).filter(lambda b: b"%" not in b),
        st.binary(min_size=1, max_size=1).map(lambda b: b"%" + b.hex().encode()),
        st.sampled_from([b"%", b"%4", b"%g1", b"\\", b"\\x41", b"%5C", b"%5c%78"]),
    ),
    max_size=20,
).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(escaped)
def test_fast_unquote_agrees_with_the_plain_loop(value: bytes) -> None:
    try:
        expected: bytes | None = announce._unquote_loop(value)
    except AnnounceError:
        expected = None
    try:
        got: bytes | None = announce.unquote_bytes(value)
    except AnnounceError:
        got = None
    assert got == expected


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1), st.integers(1, 65535))
def test_numbers_of_any_length_parse_the_same(left: int, uploaded: int, downloaded: int, port: int) -> None:
    query = b"info_hash=%s&peer_id=%s&port=%d&uploaded=%d&downloaded=%d&left=%d" % (
        b"a" * 20, b"b" * 20, port, uploaded, downloaded, left,
    )  # fmt: skip
    request = parse_announce_query(query)
    assert (request.port, request.uploaded, request.downloaded, request.left) == (port, uploaded, downloaded, left)


def test_expired_peers_are_never_handed_out_before_the_sweep() -> None:
    store = MemoryPeerStore()
    settings = TrackerSettings(interval=60, min_interval=30, peer_expiry=90)
    tracker = Tracker(store, settings, lambda h: True, {}, 0, random.Random(5))
    place = Place("10.0.0.1", "S", "", "10.0.0", bytes([10, 0, 0, 1]), ("", "10.0.0"))

    def announce(n: int, now: float, seeder: bool):  # type: ignore[no-untyped-def]
        return tracker.announce_now(AnnounceRequest(IH, b"%020d" % n, 1000 + n, 0, 0, 0 if seeder else 9), place, now)

    for n in range(6):
        announce(n, 1000.0, n < 3)  # seeders 0-2, leechers 3-5; they expire at 1090
    announce(1, 1050.0, True)
    announce(4, 1050.0, False)
    announce(5, 1050.0, False)
    as_seeder = announce(2, 1095.0, True)  # 2 refreshes itself; 0 and 3 have expired
    assert sorted(port for _, port in as_seeder.peers) == [1004, 1005]
    as_leecher = announce(5, 1096.0, False)
    assert sorted(port for _, port in as_leecher.peers) == [1001, 1002, 1004]
