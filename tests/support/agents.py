"""Shared pieces for the agent tests: signed packages, a real site server, seeders, agents.

Every agent binds its own 127.0.1.x address (peers and tracker), so the tracker sees distinct
sources; all are in one site. tests/test_tests_kit.py checks the helpers themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp

from p2pdist.agent.config import AgentSettings, CacheSettings, ControlSettings
from p2pdist.agent.control import ControlServer
from p2pdist.control.client import ControlClient
from p2pdist.control.schema import PackageStatus
from p2pdist.agent.daemon import Agent
from p2pdist.engine.session import Session
from p2pdist.engine.settings import EngineSettings
from p2pdist.engine.torrent import Torrent
from p2pdist.engine.tracker_client import TrackerClient
from p2pdist.metainfo import Metainfo, PackageIdentity
from p2pdist.metainfo.signing import generate_key, raw_public_key, sign_torrent
from p2pdist.storage.files import FileStorage
from p2pdist.tracker.server import RunningServer, start
from p2pdist.tracker.settings import LimitSettings, ListenSettings, ServerSettings, SiteSettings, TrackerSettings
from p2pdist.tracker.web import STATE, build_app
from tests.support.torrents import make_torrent, random_bytes

ADMIN = "agent-tests-admin-token"
KEY = generate_key()
PUBLIC_HEX = raw_public_key(KEY.public_key()).hex()
SEED_HOST = "127.0.1.250"
FAST_ENGINE = dict(listen_port=0, tick_interval=0.2, choke_interval=1.0, connect_timeout=3.0)


@dataclass
class Package:
    torrent: bytes  # signed
    meta: Metainfo
    files: dict[str, bytes]

    @property
    def data(self) -> bytes:
        return b"".join(self.files.values())


def make_package(
    package_id: str,
    version: int,
    size: int,
    *,
    announce: str,
    seed: int = 0,
    piece_length: int = 32 * 1024,
    private: bool = True,
    key=KEY,
    name: str | None = None,
    web_seeds: tuple[str, ...] = (),
) -> Package:
    """A signed two-file package torrent (``<name>/setup.exe`` and ``<name>/data/payload.bin``)."""
    data = random_bytes(size, seed)
    cut = min(size // 5 + 1, size - 1)
    files = {"setup.exe": data[:cut], "data/payload.bin": data[cut:]}
    raw, meta = make_torrent(
        files,
        name=name or package_id,
        piece_length=piece_length,
        trackers=((announce,),),
        web_seeds=web_seeds,
        package=PackageIdentity(package_id, version),
        private=private,
    )
    return Package(sign_torrent(meta, key) if key is not None else raw, meta, files)


def server_settings(data_dir: Path) -> ServerSettings:
    return ServerSettings(
        listen=ListenSettings(host="127.0.0.1", port=0),
        data_dir=data_dir,
        admin_token=ADMIN,
        public_keys=(PUBLIC_HEX,),
        tracker=TrackerSettings(interval=60, min_interval=5, peer_expiry=120),
        sites=(SiteSettings("HQ", ("127.0.0.0/8",)),),
        limits=LimitSettings(announce_rate=0),
    )


@contextlib.asynccontextmanager
async def site_server(data_dir: Path) -> AsyncIterator[RunningServer]:
    settings = server_settings(data_dir)
    server = await start(build_app(settings), settings.listen, "127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop()


def server_state(server: RunningServer):  # type: ignore[no-untyped-def]
    return server.runner.app[STATE]


async def publish(server: RunningServer, torrent: bytes) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(server.url + "/api/packages", data=torrent, headers={"Authorization": f"Bearer {ADMIN}"}) as reply:
            assert reply.status in (200, 201), await reply.text()


def write_source(root: Path, package: Package) -> Path:
    """The package's files laid out as a seed holds them: ``root/<name>/...``."""
    for entry, body in zip(package.meta.info.files, package.files.values()):
        target = root.joinpath(*entry.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
    return root


@contextlib.asynccontextmanager
async def seeder(root: Path, packages: list[Package], *, host: str = SEED_HOST, upload_limit: int = 0) -> AsyncIterator[list[Torrent]]:
    """A plain engine session seeding ``packages`` from files, announcing to their tracker."""
    session = Session(EngineSettings(listen_host=host, bind_host=host, upload_rate_limit=upload_limit, **FAST_ENGINE), rng=random.Random(5))
    await session.start()
    connector = aiohttp.TCPConnector(local_addr=(host, 0))
    http = aiohttp.ClientSession(connector=connector)
    torrents, trackers, tasks = [], [], []
    try:
        for package in packages:
            folder = write_source(root / package.meta.info_hash_hex, package)
            torrent = await session.add_torrent(package.meta, FileStorage(package.meta.info, folder, info_hash=package.meta.info_hash))
            assert torrent.completed.is_set()
            tracker = TrackerClient(torrent, http, port=session.port)
            await tracker.announce("started")
            tasks.append(asyncio.ensure_future(tracker.run()))
            torrents.append(torrent)
            trackers.append(tracker)
        yield torrents
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.close()
        await http.close()


@contextlib.contextmanager
def socket_dir() -> Iterator[Path]:
    """A short folder for Unix sockets (paths are limited to ~100 bytes), world-traversable."""
    path = Path(tempfile.mkdtemp(prefix="p2pa-", dir="/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def agent_settings(root: Path, n: int, repository: str, sockets: Path, **changes: object) -> AgentSettings:
    host = f"127.0.1.{n}"
    engine = EngineSettings(listen_host=host, bind_host=host, **FAST_ENGINE)  # type: ignore[arg-type]
    settings = AgentSettings(
        repository=repository,
        public_keys=(PUBLIC_HEX,),
        cache_dir=root / f"agent{n}" / "cache",
        state_dir=root / f"agent{n}" / "state",
        log_file=None,
        engine=engine,
        cache=CacheSettings(min_seed_days=3.0),
        control=ControlSettings(address=f"unix:{sockets / f'agent{n}.sock'}"),
        retry_interval=0.5,
        flush_interval=0.5,
        report_interval=3600.0,
    )
    return replace(settings, **changes)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_agent(settings: AgentSettings) -> AsyncIterator[tuple[Agent, ControlClient]]:
    agent = Agent(settings)
    control = ControlServer(agent, settings.control, settings.token_file)
    await agent.start()
    try:
        await control.start()
        token_file = settings.token_file if not settings.control.is_unix else None
        yield agent, ControlClient(control.address, token_file=token_file, timeout=10.0)
    finally:
        await control.close()
        await agent.close()


async def wait_state(client: ControlClient, package_id: str, state: str, timeout: float = 30.0) -> PackageStatus:
    """Poll until the package reaches ``state`` (bounded); the last status on timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    status = await client.status(package_id)
    while status.state != state:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{package_id} still {status.state} after {timeout} s: {status}")
        await asyncio.sleep(0.1)
        status = await client.status(package_id)
    return status


def read_package(path: Path, package: Package) -> bytes:
    """The package's bytes as found under its cache path (``.../<name>``)."""
    return b"".join(path.joinpath(*entry.path[1:]).read_bytes() for entry in package.meta.info.files)
