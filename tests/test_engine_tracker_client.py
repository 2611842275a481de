"""The engine's tracker client against real HTTP trackers on 127.0.0.1: what goes on the wire,
how refusals differ from faults, and that it stops when told, whatever it is doing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from p2pdist.engine.session import Session
from p2pdist.engine.settings import EngineSettings
from p2pdist.engine.torrent import Torrent
from p2pdist.engine.tracker_client import TrackerClient, TrackerRefused, TrackerUnreachable, same_origin_tiers
from p2pdist.storage.memory import MemoryStorage
from tests.support.torrents import make_torrent, random_bytes
from p2pdist.aio import stop_tasks
from p2pdist.metainfo import encode_torrent, parse_metainfo
from p2pdist.metainfo.signing import sign_torrent
from tests.support.trackers import ANSWER, HANG, HTTP_ERROR, REFUSAL, REFUSE, ScriptedTracker, closed_port
from tests.support.siteserver import KEY, info_dict, make_settings, publish, running
from tests.support.trackers import every_byte_in_twenties

UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
FILES = {"setup.msi": random_bytes(70_000, seed=31)}


def percent_encoded(data: bytes) -> str:
    """BEP 3's encoding of a binary field: every byte outside the unreserved set as %XX."""
    return "".join(chr(b) if b in UNRESERVED else f"%{b:02X}" for b in data)


def query_field(target: str, name: str) -> str:
    fields = dict(part.split("=", 1) for part in urlsplit(target).query.split("&"))
    return fields[name]


@contextlib.asynccontextmanager
async def announcing(url: str, *, info_hash: bytes | None = None, peer_id: bytes | None = None) -> AsyncIterator[tuple[Torrent, TrackerClient]]:
    """A seeding torrent in a session and its tracker client for ``url`` (not yet running)."""
    raw, meta = make_torrent(FILES, name="PS100031", trackers=((url,),))
    if info_hash is not None:
        meta = meta.replace(info_hash=info_hash)
    session = Session(EngineSettings(listen_host="127.0.0.1"), peer_id=peer_id, rng=random.Random(1))
    await session.start()
    http = aiohttp.ClientSession()
    try:
        torrent = await session.add_torrent(meta, MemoryStorage.from_data(meta.info, b"".join(FILES.values())))
        yield torrent, TrackerClient(torrent, http, port=session.port, timeout=5.0, rng=random.Random(2))
    finally:
        await http.close()
        await session.close()


async def test_announces_carry_every_byte_of_info_hash_and_peer_id_percent_encoded() -> None:
    with ScriptedTracker(ANSWER) as tracker:
        pairs = list(zip(every_byte_in_twenties(), every_byte_in_twenties(offset=7)))
        for info_hash, peer_id in pairs:
            async with announcing(tracker.url, info_hash=info_hash, peer_id=peer_id) as (_, client):
                await client.announce("started")
        targets = tracker.wait_requests(len(pairs))
    for (info_hash, peer_id), target in zip(pairs, targets):
        assert query_field(target, "info_hash") == percent_encoded(info_hash)
        assert query_field(target, "peer_id") == percent_encoded(peer_id)


async def test_a_refusal_is_told_apart_from_a_tracker_that_is_down() -> None:
    with ScriptedTracker(REFUSE) as refusing, ScriptedTracker(HTTP_ERROR) as erring:
        async with announcing(refusing.url) as (_, client):
            with pytest.raises(TrackerRefused, match=REFUSAL):
                await client.announce("started")
        async with announcing(erring.url) as (_, client):
            with pytest.raises(TrackerRefused, match="HTTP 400"):
                await client.announce("started")
    async with announcing(f"http://127.0.0.1:{closed_port()}/announce") as (_, client):
        with pytest.raises(TrackerUnreachable, match="unreachable"):
            await client.announce("started")


async def test_the_same_refusal_again_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="p2pdist.tracker_client")
    with ScriptedTracker(REFUSE) as tracker:
        async with announcing(tracker.url) as (_, client):
            task = asyncio.ensure_future(client.run())
            try:
                async with asyncio.timeout(30):
                    while client.status.last_error is None:  # then it sleeps in its back-off
                        await asyncio.sleep(0.01)
                    client._wake.set()  # retry now instead of after the back-off
                    while len(caplog.records) < 2:
                        await asyncio.sleep(0.01)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "refused" in warnings[0] and REFUSAL in warnings[0], warnings
    assert client.status.refused


async def test_run_ends_when_cancelled_as_completed_wakes_it() -> None:
    """Python 3.11's wait_for lost exactly this cancel, and `p2pdist get` never exited."""
    with ScriptedTracker(ANSWER) as tracker:
        async with announcing(tracker.url) as (torrent, client):
            task = asyncio.ensure_future(client.run())
            await asyncio.to_thread(tracker.wait_requests, 1)
            async with asyncio.timeout(30):
                while client.status.last_success is None:
                    await asyncio.sleep(0.01)
            for callback in torrent._listeners:  # what the torrent does on completion
                callback("completed")
            task.cancel()  # ... and, in the same loop iteration, the owner stops the client
            async with asyncio.timeout(30):
                await asyncio.gather(task, return_exceptions=True)
            assert task.cancelled()


@pytest.mark.parametrize("mode", [HANG, REFUSE])
async def test_run_ends_when_cancelled_mid_announce_or_in_back_off(mode: str) -> None:
    with ScriptedTracker(mode) as tracker:
        async with announcing(tracker.url) as (_, client):
            task = asyncio.ensure_future(client.run())
            await asyncio.to_thread(tracker.wait_requests, 1)
            task.cancel()
            async with asyncio.timeout(30):
                await asyncio.gather(task, return_exceptions=True)
            assert task.cancelled()


async def test_the_timer_form_announces_on_each_interval_with_no_task_in_between() -> None:
    """What the agent uses: ``start()`` re-announces every interval (5 s, the client's floor)
    with only a timer handle between announces, and ``close()`` ends it."""
    with ScriptedTracker(ANSWER, interval=5) as tracker:
        async with announcing(tracker.url) as (_, client):
            client.start()
            try:
                first = await asyncio.to_thread(tracker.wait_requests, 1)
                async with asyncio.timeout(30):
                    while client.status.last_success is None:
                        await asyncio.sleep(0.01)
                assert client._task is None and client._timer is not None  # asleep: no task
                targets = await asyncio.to_thread(tracker.wait_requests, 2)
            finally:
                await client.close()
            assert client._task is None and client._timer is None
    assert "event=started" in first[0]
    assert "event=" not in targets[1]  # the regular re-announce carries no event


def test_an_agent_keeps_only_the_trackers_of_its_own_site_server() -> None:
    tiers = (
        ("http://hq:6969/announce", "http://elsewhere.example:6969/announce"),
        ("https://hq:6969/announce",),  # another scheme is another origin
        ("http://HQ:6969/announce?site=1",),
        ("http://hq:7000/announce",),
    )
    assert same_origin_tiers(tiers, "http://hq:6969") == (("http://hq:6969/announce",), ("http://HQ:6969/announce?site=1",))
    assert same_origin_tiers((("http://hq/announce",),), "http://hq:80/") == (("http://hq/announce",),)
    assert same_origin_tiers((("not a url",),), "http://hq:6969") == ()


async def test_the_site_server_narrows_what_an_agent_dials_to_its_site(tmp_path: Path) -> None:
    """The site server names the site's networks in its answer; the session dials nothing else."""
    raw_info, payload = info_dict("tools.msi", "PS1000EF", 1, size=50_000, seed=5)
    async with running(make_settings(tmp_path / "server", public_url="")) as server:
        unsigned = encode_torrent(raw_info, trackers=((server.url + "/announce",),))
        torrent = sign_torrent(parse_metainfo(unsigned), KEY)
        assert (await publish(server, torrent)).status == 201
        meta = parse_metainfo(torrent)
        session = Session(EngineSettings(listen_host="127.0.1.20", bind_host="127.0.1.20"))  # HQ floor A
        await session.start()
        connector = aiohttp.TCPConnector(local_addr=("127.0.1.20", 0))
        try:
            async with aiohttp.ClientSession(connector=connector) as http:
                added = await session.add_torrent(meta, MemoryStorage(meta.info))
                assert session.dial_refusal(("127.1.0.5", 7000)) is None  # nothing said yet
                client = TrackerClient(added, http, port=session.port, on_site_networks=session.set_site_networks)
                task = asyncio.ensure_future(client.run())
                try:
                    async with asyncio.timeout(30):
                        while client.status.last_success is None:
                            await asyncio.sleep(0.02)
                finally:
                    await stop_tasks([task])
            assert session.dial_refusal(("127.1.0.5", 7000)) is not None  # the branch office
            assert session.dial_refusal(("127.0.2.9", 7000)) is None  # HQ floor B: same site
            assert session.dial_refusal(("127.0.0.200", 7000)) is None  # the site's seed
        finally:
            await session.close()
