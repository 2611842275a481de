"""The interop matrix: p2pdist and libtorrent find each other through a tracker alone.

No peer is given by hand (no ``--peer``, no ``connect_peer``): each row works only if both sides
announce correctly and the tracker introduces them. The stock tracker is Debian's opentracker
in whitelist mode, and the torrent's info-hash holds byte 0x24, which opentracker refuses with
HTTP 400 when it arrives unencoded. The last rows run libtorrent against p2pdist's own site
server, and p2pdist's announces against opentracker for every byte value. Each transfer row
checks the SHA-1 of what arrived, and that `p2pdist get` exits 0 promptly.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from p2pdist.engine.session import Session
from p2pdist.engine.settings import EngineSettings
from p2pdist.engine.tracker_client import TrackerClient
from p2pdist.metainfo import Metainfo, encode_torrent, parse_metainfo
from p2pdist.metainfo.signing import sign_torrent
from p2pdist.storage.memory import MemoryStorage
from tests.support import lt as ltsupport
from tests.support import trackers
from tests.support.torrents import make_torrent, random_bytes, write_files
from tests.support.siteserver import KEY, info_dict, make_settings, publish, running
from tests.support.trackers import every_byte_in_twenties

pytestmark = pytest.mark.skipif(not trackers.available(), reason="opentracker is not installed (Debian package opentracker; ./scripts/test installs it)")

FILES = {"setup.msi": random_bytes(900_000, seed=41), "lang/de.mst": random_bytes(70_000, seed=42), "empty.cfg": b""}
EXIT_CEILING = 20.0  # seconds from "complete" to exit: a hang, not a speed


def torrent_with_dollar(announce: str) -> tuple[bytes, Metainfo]:
    """A torrent for FILES whose info-hash holds byte 0x24 ('$'), found by varying its name."""
    for n in range(10_000):
        raw, meta = make_torrent(FILES, name=f"PS1000{n:02X}", piece_length=32 * 1024, trackers=((announce,),))
        if 0x24 in meta.info_hash:
            return raw, meta
    raise AssertionError("no name gave an info-hash with byte 0x24")


def digests(root: Path, meta: Metainfo) -> list[str]:
    return [hashlib.sha1(root.joinpath(*entry.path).read_bytes()).hexdigest() for entry in meta.info.files]


def expected_digests() -> list[str]:
    return [hashlib.sha1(body).hexdigest() for body in FILES.values()]


async def run_get(torrent: Path, out: Path, *, listen: str = "127.0.0.1") -> tuple[int, float, str]:
    """`p2pdist get` as a process: exit code, seconds from its "complete" line to its exit, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "p2pdist", "get", str(torrent), "-o", str(out), "--listen", listen, "--timeout", "90",
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )
    assert process.stderr is not None
    lines: list[str] = []
    completed_at: float | None = None
    async with asyncio.timeout(120):
        while line := (await process.stderr.readline()).decode(errors="replace"):
            lines.append(line.rstrip())
            if " complete: " in line:
                completed_at = time.monotonic()
        code = await process.wait()
    ended = time.monotonic()
    return code, (ended - completed_at) if completed_at is not None else float("inf"), "\n".join(lines)


async def wait_registered(tracker: trackers.OpenTracker, info_hash: bytes, **counts: int) -> None:
    await asyncio.to_thread(tracker.wait_registered, info_hash, **counts)


async def test_libtorrent_seed_to_p2pdist_get_through_opentracker(tmp_path: Path) -> None:
    port = trackers.closed_port()
    raw, meta = torrent_with_dollar(f"http://127.0.0.1:{port}/announce")
    write_files(tmp_path / "lt", meta, FILES)
    (tmp_path / "x.torrent").write_bytes(raw)
    with trackers.opentracker([meta.info_hash], port=port) as tracker:
        peer = [ltsupport.session(announce=True)]
        try:
            handle = ltsupport.add(peer[0], raw, tmp_path / "lt")
            await ltsupport.wait_seeding(handle)
            await wait_registered(tracker, meta.info_hash, seeds=1)
            code, exit_after, stderr = await run_get(tmp_path / "x.torrent", tmp_path / "out")
        finally:
            await ltsupport.close(peer)
    assert code == 0, stderr
    assert digests(tmp_path / "out", meta) == expected_digests()
    assert exit_after < EXIT_CEILING, stderr


async def test_p2pdist_seed_to_libtorrent_leecher_through_opentracker(tmp_path: Path) -> None:
    port = trackers.closed_port()
    raw, meta = torrent_with_dollar(f"http://127.0.0.1:{port}/announce")
    write_files(tmp_path / "seed", meta, FILES)
    (tmp_path / "x.torrent").write_bytes(raw)
    with trackers.opentracker([meta.info_hash], port=port) as tracker:
        seeder = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "p2pdist", "seed", str(tmp_path / "x.torrent"), str(tmp_path / "seed"),
            "--listen", "127.0.0.1", "-q", "--duration", "90", stderr=asyncio.subprocess.PIPE,
        )
        peer = [ltsupport.session(announce=True)]
        try:
            await wait_registered(tracker, meta.info_hash, seeds=1)
            handle = ltsupport.add(peer[0], raw, tmp_path / "lt")
            await ltsupport.wait_seeding(handle, timeout=60)
        finally:
            await ltsupport.close(peer)
            seeder.terminate()
            async with asyncio.timeout(30):
                _, seed_errors = await seeder.communicate()
    assert digests(tmp_path / "lt", meta) == expected_digests()
    assert b"Traceback" not in seed_errors, seed_errors.decode(errors="replace")


async def test_libtorrent_seed_to_p2pdist_get_through_the_site_server(tmp_path: Path) -> None:
    """libtorrent announces to p2pdist's own tracker; get meets it there (both in HQ floor A)."""
    raw_info, payload = info_dict("office.msi", "PS1000EE", 1, size=300_000, seed=4)
    # public_url "": the torrent names this server by its port, as the publish reaches it.
    async with running(make_settings(tmp_path / "server", public_url="")) as server:
        unsigned = encode_torrent(raw_info, trackers=((server.url + "/announce",),))
        torrent = sign_torrent(parse_metainfo(unsigned), KEY)
        assert (await publish(server, torrent)).status == 201
        (tmp_path / "lt").mkdir()
        (tmp_path / "lt" / "office.msi").write_bytes(payload)
        (tmp_path / "x.torrent").write_bytes(torrent)
        peer = [ltsupport.session(host="127.0.1.9", announce=True)]
        try:
            handle = ltsupport.add(peer[0], torrent, tmp_path / "lt")
            await ltsupport.wait_seeding(handle)
            code, exit_after, stderr = await run_get(tmp_path / "x.torrent", tmp_path / "out", listen="127.0.1.10")
        finally:
            await ltsupport.close(peer)  # its "stopped" goes to a server on this loop
    assert code == 0, stderr
    assert hashlib.sha1((tmp_path / "out" / "office.msi").read_bytes()).digest() == hashlib.sha1(payload).digest()
    assert exit_after < EXIT_CEILING, stderr


async def test_every_byte_value_of_info_hash_and_peer_id_registers_at_opentracker() -> None:
    """Two p2pdist peers per info-hash; the second is told of the first, so the first counted."""
    hashes = every_byte_in_twenties()
    ids = every_byte_in_twenties(offset=131)
    _, meta = make_torrent({"a.bin": random_bytes(40_000, seed=43)}, name="PS1000AB")
    with trackers.opentracker(hashes) as tracker:
        async with aiohttp.ClientSession() as http:
            for info_hash, peer_id in zip(hashes, ids):
                own = meta.replace(info_hash=info_hash, trackers=((tracker.url,),))
                ports = []
                for n, pid in enumerate((peer_id, peer_id[::-1])):
                    session = Session(EngineSettings(listen_host="127.0.0.1"), peer_id=pid, rng=random.Random(n))
                    await session.start()
                    try:
                        torrent = await session.add_torrent(own, MemoryStorage(own.info))
                        client = TrackerClient(torrent, http, port=session.port, timeout=10.0)
                        answer = await client.announce("started")
                        ports.append(session.port)
                    finally:
                        await session.close()
                assert ("127.0.0.1", ports[0]) in answer.peers, (info_hash.hex(), answer)

