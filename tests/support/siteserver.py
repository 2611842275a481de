"""Shared pieces for the site server tests: signed torrents, settings, a real server, clients.

Used by the tracker, repository and server tests; tests/test_tests_kit.py checks the helpers
themselves.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote_from_bytes

import aiohttp

from p2pdist import bencode
from p2pdist.metainfo import PackageIdentity, encode_torrent, parse_metainfo
from p2pdist.metainfo.signing import generate_key, raw_public_key, sign_torrent
from p2pdist.tracker.announce import AnnounceRequest, AnnounceResponse, build_announce_url, parse_announce_response
from p2pdist.tracker.server import RunningServer, start
from p2pdist.tracker.settings import (
    LimitSettings,
    ListenSettings,
    LocationSettings,
    ServerSettings,
    SiteSettings,
    TrackerSettings,
)
from p2pdist.tracker.web import build_app

TOKEN = "s3cret-admin-token"
KEY = generate_key()
PUBLIC_HEX = raw_public_key(KEY.public_key()).hex()
PIECE = 16 * 1024

# 127.0.0.0/16 is HQ (floor A 127.0.1.0/24, floor B 127.0.2.0/24); 127.1.0.0/16 is a branch;
# anything else under 127/8 is in no site. 127.0.0.1 is in HQ with no location.
SITES = (
    SiteSettings(
        "HQ",
        ("127.0.0.0/16",),
        (LocationSettings("floor-a", ("127.0.1.0/24",)), LocationSettings("floor-b", ("127.0.2.0/24",))),
        ("127.0.0.200:7000",),
    ),
    SiteSettings("Branch", ("127.1.0.0/16",)),
)


def info_dict(name: str, package_id: str, version: int, size: int = 40_000, seed: int = 0) -> tuple[bytes, bytes]:
    """(raw info bytes, payload) of a single-file package torrent with real piece hashes."""
    payload = hashlib.sha256(f"{name}-{seed}".encode()).digest() * (size // 32 + 1)
    payload = payload[:size]
    pieces = b"".join(hashlib.sha1(payload[i : i + PIECE]).digest() for i in range(0, size, PIECE))
    info = {
        b"length": size,
        b"name": name.encode(),
        b"p2pdist": PackageIdentity(package_id, version).to_bencode(),
        b"piece length": PIECE,
        b"pieces": pieces,
        b"private": 1,
    }
    return bencode.encode(info), payload


def signed_torrent(
    package_id: str = "PS100012", version: int = 1, name: str = "office.msi", announce: str = "http://127.0.0.1/announce", key=KEY
) -> bytes:
    raw_info, _ = info_dict(name, package_id, version)
    unsigned = encode_torrent(raw_info, trackers=((announce,),), creation_date=1_700_000_000)
    return sign_torrent(parse_metainfo(unsigned), key)


def info_hash_of(torrent: bytes) -> bytes:
    return parse_metainfo(torrent).info_hash


def make_settings(data_dir: Path, **changes: object) -> ServerSettings:
    settings = ServerSettings(
        listen=ListenSettings(host="127.0.0.1", port=0, max_line_size=4096, max_field_size=4096),
        data_dir=data_dir,
        admin_token=TOKEN,
        public_keys=(PUBLIC_HEX,),
        tracker=TrackerSettings(interval=60, min_interval=30, peer_expiry=90, numwant_default=50, numwant_max=100),
        sites=SITES,
        limits=LimitSettings(announce_rate=0),
        public_url="http://127.0.0.1",  # what signed_torrent() announces to by default
    )
    return replace(settings, **changes)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running(settings: ServerSettings, store=None) -> AsyncIterator[RunningServer]:
    server = await start(build_app(settings, store), settings.listen, "127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop()


def session_from(address: str = "127.0.0.1") -> aiohttp.ClientSession:
    """A client whose connections leave from ``address`` (a different 127.x is a different site)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10))


def peer_id(n: int) -> bytes:
    return b"-PD0001-" + f"{n:012d}".encode()


def announce_url(server: RunningServer, info_hash: bytes, pid: bytes, port: int, **fields: object) -> str:
    request = AnnounceRequest(info_hash, pid, port, 0, 0, fields.pop("left", 1000), **fields)  # type: ignore[arg-type]
    return build_announce_url(server.url + "/announce", request)


async def publish(server: RunningServer, torrent: bytes, token: str = TOKEN) -> aiohttp.ClientResponse:
    async with session_from() as session:
        response = await session.post(
            server.url + "/api/packages", data=torrent, headers={"Authorization": f"Bearer {token}"}
        )
        await response.read()
        return response


def quoted(data: bytes) -> str:
    return quote_from_bytes(data, safe="")


# The package most tests publish, and its info hash.
TORRENT = signed_torrent()
IH = info_hash_of(TORRENT)


def announce_target(n: int, port: int, extra: str = "") -> str:
    return f"/announce?info_hash={quoted(IH)}&peer_id={quoted(peer_id(n))}&port={port}&left=5&compact=1{extra}"


async def get_announce(server: RunningServer, source: str, n: int, port: int = 6881, **fields: object) -> AnnounceResponse:
    """Announce from ``source`` as peer ``n`` (``ih`` defaults to TORRENT's) and parse the answer."""
    async with session_from(source) as session:
        async with session.get(announce_url(server, fields.pop("ih", IH), peer_id(n), port, **fields)) as response:
            return parse_announce_response(await response.read())
