"""The announce/scrape codec: vectors, round trips (hypothesis) and hostile bytes."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pdist import bencode
from p2pdist.errors import RemoteError
from p2pdist.tracker.announce import (
    AnnounceError,
    AnnounceRequest,
    AnnounceResponse,
    ScrapeResponse,
    ScrapeStats,
    TrackerFailure,
    build_announce_url,
    build_scrape_url,
    encode_announce_response,
    encode_failure,
    encode_scrape_response,
    parse_announce_query,
    parse_announce_response,
    parse_scrape_query,
    parse_scrape_response,
    scrape_url,
    unquote_bytes,
)

IH = bytes(range(20))
PID = b"-LT2010-" + b"\x00\xff%&=+ ?#abc"


def query_of(url: str) -> bytes:
    return urlsplit(url).query.encode()


def test_build_and_parse_keep_binary_fields_and_existing_query() -> None:
    request = AnnounceRequest(IH, PID, 6881, 10, 20, 30, "started", 80, True, True, "10.0.0.7", "k3y")
    url = build_announce_url("http://t.example:6969/announce?passkey=abc", request)
    assert url.startswith("http://t.example:6969/announce?passkey=abc&info_hash=%00%01")
    assert parse_announce_query(query_of(url)) == request


def test_libtorrent_style_query_parses() -> None:
    query = (
        b"info_hash=%12%34Vx%9a%bc%de%f0%12%34Vx%9a%bc%de%f0%124Vx&peer_id=-lt2010-abcdefghijkl&port=6881"
        b"&uploaded=0&downloaded=0&left=1048576&corrupt=0&key=1A2B3C4D&event=started&numwant=200"
        b"&compact=1&no_peer_id=1&supportcrypto=1&redundant=0"
    )
    request = parse_announce_query(query)
    assert request.info_hash == bytes.fromhex("123456789abcdef0123456789abcdef012345678")
    assert (request.port, request.left, request.numwant, request.event) == (6881, 1048576, 200, "started")
    assert request.compact and request.no_peer_id and request.key == "1A2B3C4D"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (b"peer_id=-lt2010-abcdefghijkl&port=1&left=0", "missing info_hash"),
        (b"info_hash=abc&peer_id=-lt2010-abcdefghijkl&port=1&left=0", "info_hash must be 20 bytes, got 3"),
        (b"info_hash=%zz" + b"a" * 18 + b"&peer_id=-lt2010-abcdefghijkl&port=1&left=0", "bad %-escape"),
        (b"info_hash=" + b"a" * 20 + b"&peer_id=-lt2010-abcdefghijkl&port=0&left=0", "port must be 1-65535"),
        (b"info_hash=" + b"a" * 20 + b"&peer_id=-lt2010-abcdefghijkl&port=70000&left=0", "port 70000 exceeds"),
        (b"info_hash=" + b"a" * 20 + b"&peer_id=-lt2010-abcdefghijkl&port=-1&left=0", "port must be a non-negative"),
        (b"info_hash=" + b"a" * 20 + b"&peer_id=-lt2010-abcdefghijkl&port=1&left=0&event=exploded", "unknown event"),
        (b"info_hash=" + b"a" * 20 + b"&peer_id=-lt2010-abcdefghijkl&port=1&left=0&port=2", "duplicate parameter"),
        (b"info_hash=" + b"a" * 20 + b"&peer_id=-lt2010-abcdefghijkl&port=1", "missing left"),
        (b"info_hash=" + b"a" * 20 + b"&peer_id=-lt2010-abcdefghijkl&port=1&left=0&compact=2", "compact must be 0 or 1"),
        (b"info_hash=" + b"a" * 20 + b"&peer_id=-lt2010-abcdefghijkl&port=1&left=" + b"9" * 30, "left must be"),
        (b"&".join([b"x=1"] * 65), "more than 64 query parameters"),
        (b"x=" + b"a" * 9000, "longer than 8192"),
    ],
)
def test_bad_queries_say_why(query: bytes, reason: str) -> None:
    with pytest.raises(AnnounceError) as info:
        parse_announce_query(query)
    assert reason in info.value.reason
    assert isinstance(info.value, RemoteError)


def test_huge_numwant_is_capped_not_refused() -> None:
    query = b"info_hash=" + b"a" * 20 + b"&peer_id=" + b"b" * 20 + b"&port=1&left=0&numwant=99999999999999999999"
    assert parse_announce_query(query).numwant == 2**31 - 1


def test_unquote_is_binary_safe_and_strict() -> None:
    assert unquote_bytes(b"%00%FF%fFa+b") == b"\x00\xff\xffa+b"
    for bad in (b"%", b"%0", b"%g0", b"abc%"):
        with pytest.raises(AnnounceError):
            unquote_bytes(bad)


requests = st.builds(
    AnnounceRequest,
    info_hash=st.binary(min_size=20, max_size=20),
    peer_id=st.binary(min_size=20, max_size=20),
    port=st.integers(1, 65535),
    uploaded=st.integers(0, 2**63 - 1),
    downloaded=st.integers(0, 2**63 - 1),
    left=st.integers(0, 2**63 - 1),
    event=st.sampled_from(["", "started", "completed", "stopped"]),
    numwant=st.none() | st.integers(0, 2**31 - 1),
    compact=st.booleans(),
    no_peer_id=st.booleans(),
    ip=st.none() | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40),
    key=st.none() | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=16),
)


@settings(max_examples=200, deadline=None)
@given(requests, st.sampled_from(["http://h/announce", "https://h:8443/x/announce?auth=%41b", "http://[::1]/announce"]))
def test_request_round_trip(request: AnnounceRequest, base: str) -> None:
    assert parse_announce_query(query_of(build_announce_url(base, request))) == request


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_hostile_query_bytes_raise_only_announce_error(data: bytes) -> None:
    try:
        parse_announce_query(data)
    except AnnounceError as exc:
        assert exc.reason
    try:
        parse_scrape_query(data)
    except AnnounceError as exc:
        assert exc.reason


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str)
responses = st.builds(
    AnnounceResponse,
    interval=st.integers(0, 2**31),
    min_interval=st.none() | st.integers(0, 2**31),
    peers=st.lists(st.tuples(ipv4 | ipv6, st.integers(0, 65535)), max_size=30).map(tuple),
    complete=st.integers(0, 10**6),
    incomplete=st.integers(0, 10**6),
    warning=st.none() | st.text(min_size=1, max_size=30),
    site_networks=st.lists(
        st.builds(lambda a, n: str(ipaddress.ip_network(f"{a}/{n}", strict=False)), st.ip_addresses(v=4), st.integers(8, 32)), max_size=5
    ).map(tuple),
)


def _v4_first(peers: tuple[tuple[str, int], ...]) -> tuple[tuple[str, int], ...]:
    return tuple(p for p in peers if ":" not in p[0]) + tuple(p for p in peers if ":" in p[0])


@settings(max_examples=200, deadline=None)
@given(responses, st.booleans())
def test_response_round_trip(response: AnnounceResponse, compact: bool) -> None:
    raw = encode_announce_response(response, compact)
    assert bencode.decode(raw) is not None  # canonical: the hand-written compact form sorts its keys
    parsed = parse_announce_response(raw)
    assert parsed.site_networks == response.site_networks
    expected_peers = _v4_first(response.peers) if compact else response.peers
    assert parsed.peers == tuple((str(ipaddress.ip_address(a)), p) for a, p in expected_peers)
    assert (parsed.interval, parsed.min_interval, parsed.complete, parsed.incomplete, parsed.warning) == (
        response.interval,
        response.min_interval,
        response.complete,
        response.incomplete,
        response.warning,
    )


def test_compact_and_peers6_vectors() -> None:
    body = encode_announce_response(AnnounceResponse(1800, 300, (("10.0.0.1", 6881), ("2001:db8::1", 51413))))
    value = bencode.decode(body)
    assert value[b"peers"] == bytes([10, 0, 0, 1, 0x1A, 0xE1])
    assert value[b"peers6"] == bytes.fromhex("20010db8000000000000000000000001") + (51413).to_bytes(2, "big")
    assert value[b"interval"] == 1800 and value[b"min interval"] == 300


def test_dictionary_peers_carry_peer_ids() -> None:
    response = AnnounceResponse(60, peers=(("10.1.2.3", 1),), peer_ids=(b"x" * 20,))
    value = bencode.decode(encode_announce_response(response, compact=False))
    assert value[b"peers"] == [{b"ip": b"10.1.2.3", b"peer id": b"x" * 20, b"port": 1}]
    assert parse_announce_response(bencode.encode(value)).peer_ids == (b"x" * 20,)


def test_failure_reason_raises_tracker_failure() -> None:
    with pytest.raises(TrackerFailure) as info:
        parse_announce_response(encode_failure("torrent not registered", retry_in=30))
    assert info.value.reason == "torrent not registered" and info.value.retry_in == 30 and info.value.kind is None
    with pytest.raises(TrackerFailure) as info:
        parse_announce_response(encode_failure("gone", kind="not-published"))
    assert info.value.kind == "not-published"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"le",
        b"d8:intervali-1ee",
        b"d5:peers3:abce",
        b"d8:intervali1e5:peers5:abcdee",
        b"d8:intervali1e6:peers62:abe",
        b"d8:intervali1e5:peersld2:ip3:xyz4:porti1eeee",
        b"d8:intervali1e5:peersi3ee",
        b"d8:intervali1e",
    ],
)
def test_malformed_responses_raise_announce_error(body: bytes) -> None:
    with pytest.raises(AnnounceError):
        parse_announce_response(body)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_hostile_response_bytes_raise_only_documented_errors(data: bytes) -> None:
    for parse in (parse_announce_response, parse_scrape_response):
        try:
            parse(data)
        except (AnnounceError, TrackerFailure):
            pass


def test_scrape_url_rules_of_bep48() -> None:
    assert scrape_url("http://t/announce") == "http://t/scrape"
    assert scrape_url("http://t/x/announce.php?k=1") == "http://t/x/scrape.php?k=1"
    assert scrape_url("http://t/a/annonce") is None
    with pytest.raises(AnnounceError):
        build_scrape_url("http://t/tracker", [IH])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=20, max_size=20), min_size=1, max_size=10, unique=True))
def test_scrape_round_trip(hashes: list[bytes]) -> None:
    url = build_scrape_url("http://t/announce?k=v", hashes)
    assert parse_scrape_query(query_of(url)) == tuple(hashes)
    stats = ScrapeResponse({h: ScrapeStats(i, i * 2, i * 3) for i, h in enumerate(hashes)})
    assert parse_scrape_response(encode_scrape_response(stats)) == stats


def test_scrape_query_refuses_short_hash() -> None:
    with pytest.raises(AnnounceError, match="20 bytes"):
        parse_scrape_query(b"info_hash=abc")
